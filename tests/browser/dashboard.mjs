// The office dashboard in Debian's chromium, driven by playwright-core.
// Run by tests/integration/browser.rs against a server seeded with the
// demo district:  GRIDSYNC_URL, GRIDSYNC_OFFICE_TOKEN, GRIDSYNC_DEPT_TOKEN,
// GRIDSYNC_SCREENSHOT (where to write the figures screenshot).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";

const url = process.env.GRIDSYNC_URL;
const officeToken = process.env.GRIDSYNC_OFFICE_TOKEN;
const deptToken = process.env.GRIDSYNC_DEPT_TOKEN;
const shot = process.env.GRIDSYNC_SCREENSHOT;
assert.ok(url && officeToken && deptToken && shot, "environment not set");

const browser = await chromium.launch({
  executablePath: process.env.GRIDSYNC_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") failures.push(`console: ${m.text()}`); });

  // A wrong token is refused with a message.
  await page.goto(url);
  await page.fill("#token", "gso1.off-999.00");
  await page.click("#login-button");
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.length > 0);
  assert.equal(await page.isVisible("#app"), false);
  // Refused requests log a console error in chromium; they were expected.
  failures.length = 0;

  // The office logs in: overdue and conflicted cases come first.
  await page.fill("#token", officeToken);
  await page.click("#login-button");
  await page.waitForSelector("#overdue tbody tr");
  await page.waitForSelector("#conflicts tbody tr");
  const overdue = await page.locator("#overdue tbody tr").count();
  const conflicts = await page.locator("#conflicts tbody tr").count();
  assert.ok(overdue > 0, "overdue cases listed");
  assert.ok(conflicts > 0, "conflicted cases listed");
  const conflictTotal = await page.textContent("#conflict-count");

  // A conflicted case: its timeline, then the office settles it.
  await page.locator("#conflicts tbody tr").first().click();
  await page.waitForSelector("#case-timeline li");
  assert.ok(await page.locator('#case-timeline li[data-type="status"]').count() >= 3);
  assert.ok(await page.isVisible("#case-conflict"), "the conflict is shown");
  const choices = await page.locator("#case-candidates button").count();
  assert.ok(choices >= 2, "both sides offered");
  await page.locator("#case-candidates button").first().click();
  await page.waitForFunction(() => document.querySelector("#case-conflict").hidden);
  await page.waitForFunction(
    (before) => document.querySelector("#conflict-count").textContent !== before,
    conflictTotal,
  );
  const reporter = await page.locator("#case-facts dd").nth(5).textContent();
  assert.match(reporter, /139\d{8}/, "the office sees the reporter's phone");
  // The office attaches a photo (a 2x2 PNG): its thumbnail appears, made
  // by the server and shown from memory under the page's policy.
  const photo = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==",
    "base64",
  );
  await page.setInputFiles("#case-upload", { name: "现场.png", mimeType: "image/png", buffer: photo });
  await page.waitForSelector("#case-photos img");
  const shown = await page.locator("#case-photos img").first().evaluate((img) => img.complete && img.naturalWidth);
  assert.ok(shown > 0, "the thumbnail decodes in the browser");
  assert.match(await page.textContent("#case-photos figcaption"), /现场\.png/);
  await page.click("#case-close");

  // Any case is found by a partial Chinese word, paged, and opened.
  await page.click('nav button[data-tab="cases"]');
  await page.waitForSelector("#cases tbody tr");
  const everything = await page.textContent("#cases-count");
  await page.fill("#case-q", "充电");
  await page.click("#case-search-button");
  await page.waitForFunction((before) => document.querySelector("#cases-count").textContent !== before, everything);
  const titles = await page.locator("#cases tbody tr td:nth-child(2)").allTextContents();
  assert.ok(titles.length > 0, "cases found");
  assert.ok(titles.every((t) => t.includes("充电")), `every hit holds the word: ${titles}`);
  const found = Number((await page.textContent("#cases-count")).match(/\d+/)[0]);
  assert.ok(found < Number(everything.match(/\d+/)[0]), "the search narrows the list");
  if (found > 50) {
    await page.click("#cases-next");
    await page.waitForFunction(() => document.querySelector("#cases-page").textContent.startsWith("第 2 "));
  }
  await page.locator("#cases tbody tr").first().click();
  await page.waitForSelector("#case-timeline li");
  assert.match(await page.textContent("#case-title"), /充电/);
  await page.click("#case-close");
  // A word no case has: an empty list, not an error.
  await page.fill("#case-q", "不存在的词语");
  await page.click("#case-search-button");
  await page.waitForFunction(() => document.querySelector("#cases-count").textContent === "共 0 件");
  assert.equal(await page.locator("#cases tbody tr").count(), 0);

  // Figures: the chart renders bars, checked on the screenshot's pixels.
  await page.click('nav button[data-tab="figures"]');
  await page.waitForSelector("#figures-chart svg rect[data-rate]");
  const bars = await page.locator("#figures-chart svg rect[data-rate]").count();
  assert.ok(bars >= 9 * 4, `a bar per rate per grid (${bars})`);
  const png = await page.locator("#figures-chart").screenshot();
  writeFileSync(shot, png);
  // Decoded in a blank page: the dashboard's own policy forbids data: images.
  const scratch = await browser.newPage();
  const colored = await scratch.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    // Pixels of the response-rate blue (#1565c0) and resolution red (#b71c1c).
    let blue = 0, red = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - 0x15) < 8 && Math.abs(d[i + 1] - 0x65) < 8 && Math.abs(d[i + 2] - 0xc0) < 8) blue++;
      if (Math.abs(d[i] - 0xb7) < 8 && Math.abs(d[i + 1] - 0x1c) < 8 && Math.abs(d[i + 2] - 0x1c) < 8) red++;
    }
    return { blue, red, width: c.width, height: c.height };
  }, png.toString("base64"));
  await scratch.close();
  assert.ok(colored.blue > 500 && colored.red > 500, `bars visible in the screenshot: ${JSON.stringify(colored)}`);
  const cards = await page.locator("#figures-total .card").count();
  assert.ok(cards >= 10, "figure cards");
  await page.selectOption("#group-by", "community");
  await page.waitForFunction(() => document.querySelectorAll("#figures-table tbody tr").length === 3);

  // Devices and their last sync.
  await page.click('nav button[data-tab="devices"]');
  await page.waitForSelector("#devices tbody tr");
  assert.ok((await page.textContent("#devices-stale")).includes("未同步"));

  // A department user sees cases without personal data.
  await page.click("#logout");
  await page.waitForSelector("#login-form");
  await page.fill("#token", deptToken);
  await page.click("#login-button");
  await page.waitForSelector("#overdue tbody tr");
  await page.locator("#overdue tbody tr").first().click();
  await page.waitForSelector("#case-timeline li");
  const hidden = await page.locator("#case-facts dd").nth(5).textContent();
  assert.equal(hidden, "（个人信息不可见）");
  await page.click("#case-close");
  // Nowhere on its screens a resident's phone number: the case list, a
  // search for one, the case panel.
  await page.click('nav button[data-tab="cases"]');
  await page.waitForSelector("#cases tbody tr");
  const mobile = /1[3-9]\d{9}/;
  assert.doesNotMatch(await page.innerText("body"), mobile);
  await page.fill("#case-q", "139");
  await page.click("#case-search-button");
  await page.waitForFunction(() => (document.querySelector("#cases").dataset.query || "").includes("q=139"));
  assert.doesNotMatch(await page.innerText("body"), mobile);
  assert.equal(failures.length, 0, failures.join("\n"));
  console.log(`dashboard ok: ${overdue} overdue, ${conflicts} conflicted, ${bars} bars, ${colored.blue}+${colored.red} bar pixels`);
} finally {
  await browser.close();
}
