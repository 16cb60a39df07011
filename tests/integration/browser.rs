//! The office dashboard in a real headless browser: Debian's chromium
//! driven by playwright-core (`tests/browser/dashboard.mjs`), against a
//! server seeded with the demo district. Needs `chromium` and
//! `npm install --prefix tests/browser`; runs when
//! `GRIDSYNC_BROWSER_TESTS=1` (CI sets it and installs both).

use std::path::Path;
use std::process::Command;

use gridsync_tests::server::TestServer;

#[test]
fn the_dashboard_works_in_a_real_browser() {
    if std::env::var("GRIDSYNC_BROWSER_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "browser test skipped: set GRIDSYNC_BROWSER_TESTS=1 (needs chromium and \
             `npm install --prefix tests/browser`)"
        );
        return;
    }
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "run `npm install --prefix tests/browser` first"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let seeded = gridsync_server::demo::seed(&data, 400).unwrap();
    assert!(seeded.conflicts > 0, "{seeded:?}");
    let server = TestServer::start(&data);
    // One device that synced, one that never did.
    let synced = server.enroll("w-C01-G1", &dir.path().join("d1"));
    synced.sync().unwrap();
    let _never = server.enroll("w-C02-G1", &dir.path().join("d2"));
    let token = |role: &str| {
        seeded
            .logins
            .iter()
            .find(|l| l.1 == role)
            .map(|l| l.2.clone())
            .unwrap()
    };
    let shot = dir.path().join("figures.png");
    // A picture of each view, kept where a person (or CI) can look.
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let status = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .current_dir(&browser_dir)
        .env("GRIDSYNC_URL", &server.url)
        .env("GRIDSYNC_OFFICE_TOKEN", token("office"))
        .env("GRIDSYNC_DEPT_TOKEN", token("department"))
        .env("GRIDSYNC_STREET_TOKEN", token("street"))
        .env("GRIDSYNC_SCREENSHOTS", &shots)
        .env("GRIDSYNC_SCREENSHOT", &shot)
        .status()
        .expect("node runs");
    assert!(status.success(), "the browser test failed");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 2_000,
        "a real screenshot"
    );
    for view in [
        "1-attention",
        "2-cases",
        "3-case",
        "4-meetings",
        "5-meeting",
        "6-board",
        "7-figures",
        "8-devices",
    ] {
        let png = std::fs::read(shots.join(format!("{view}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{view}");
    }
}
