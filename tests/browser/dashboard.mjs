// The office dashboard in Debian's chromium, driven by playwright-core.
// Run by tests/integration/browser.rs against a server seeded with the
// demo district:  GRIDSYNC_URL, GRIDSYNC_OFFICE_TOKEN, GRIDSYNC_DEPT_TOKEN,
// GRIDSYNC_STREET_TOKEN, GRIDSYNC_SCREENSHOT (where to write the figures
// chart), GRIDSYNC_SCREENSHOTS (a directory for a picture of each view).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";

const url = process.env.GRIDSYNC_URL;
const officeToken = process.env.GRIDSYNC_OFFICE_TOKEN;
const deptToken = process.env.GRIDSYNC_DEPT_TOKEN;
const streetToken = process.env.GRIDSYNC_STREET_TOKEN;
const shot = process.env.GRIDSYNC_SCREENSHOT;
const shots = process.env.GRIDSYNC_SCREENSHOTS;
assert.ok(url && officeToken && deptToken && streetToken && shot && shots, "environment not set");
const mobile = /1[3-9]\d{9}/;

const browser = await chromium.launch({
  executablePath: process.env.GRIDSYNC_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") failures.push(`console: ${m.text()}`); });
  // A picture of a view for a person to look at (CI keeps them).
  const snap = (name) => page.screenshot({ path: `${shots}/${name}.png` });

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
  await snap("1-attention");

  // Opens row `i` of a list in the case panel and waits until it shows.
  const openRow = async (rows, i) => {
    const before = await page.evaluate(() => Number(document.querySelector("#case").dataset.opened || 0));
    // The panel covers the right half of the lists: closed first.
    if (await page.isVisible("#case")) await page.click("#case-close");
    await page.locator(`${rows} tbody tr`).nth(i).click();
    await page.waitForFunction((n) => Number(document.querySelector("#case").dataset.opened || 0) > n, before);
  };
  // A case in a status conflict: its timeline, then the office settles it.
  let statusConflict = -1;
  for (let i = 0; i < conflicts && statusConflict < 0; i++) {
    await openRow("#conflicts", i);
    if (await page.isVisible("#case-conflict")) statusConflict = i;
  }
  assert.ok(statusConflict >= 0, "a status conflict is listed");
  await page.waitForSelector("#case-timeline li");
  assert.ok(await page.locator('#case-timeline li[data-type="status"]').count() >= 3);
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
  await snap("3-case");
  await page.click("#case-close");

  // Any case is found by a partial Chinese word, paged, and opened.
  await page.click('nav button[data-tab="cases"]');
  await page.waitForSelector("#cases tbody tr");
  const everything = await page.textContent("#cases-count");
  await page.fill("#case-q", "充电");
  await page.click("#case-search-button");
  await page.waitForFunction((before) => document.querySelector("#cases-count").textContent !== before, everything);
  await snap("2-cases");
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

  // The clerk's day: a dispatched case found by a partial word is moved to
  // another grid, supervised, given more time, handled, visited, closed.
  const search = async (params) => {
    await page.click("#case-search-button");
    await page.waitForFunction((p) => p.every((x) => (document.querySelector("#cases").dataset.query || "").includes(x)), params);
  };
  await page.fill("#case-q", "充电");
  await page.selectOption("#case-status", "dispatched");
  await search(["status=dispatched"]);
  await page.locator("#cases tbody tr").first().click();
  await page.waitForSelector('#act-transitions button[data-to="signed_for"]');
  const caseNo = (await page.textContent("#case-title")).split(" ")[0];
  const place = () => page.locator("#case-facts dd").nth(1).textContent();
  const before = await place();
  const target = await page.locator("#act-grid option").first().textContent();
  await page.click("#act-move");
  await page.waitForFunction((b) => document.querySelectorAll("#case-facts dd")[1].textContent !== b, before);
  assert.ok((await place()).startsWith(target), `moved to ${target}: ${await place()}`);
  const timeline = (sel) => page.locator(`#case-timeline li${sel}`).count();
  await page.fill("#act-reason", "请三日内办结");
  await page.click("#act-supervise");
  await page.waitForSelector('#case-timeline li[data-kind="supervision"]:has-text("请三日内办结")');
  assert.match(await page.textContent("#case-flags"), /督办/);
  const changes = await timeline('[data-type="deadline_change"]');
  await page.fill("#act-reason", "协调物业，延长期限");
  await page.click("#act-deadline");
  await page.waitForFunction((n) => document.querySelectorAll('#case-timeline li[data-type="deadline_change"]').length > n, changes);
  for (const to of ["signed_for", "in_progress", "handled"]) {
    await page.click(`#act-transitions button[data-to="${to}"]`);
    await page.waitForFunction((t) => !document.querySelector(`#act-transitions button[data-to="${t}"]`), to);
  }
  await page.check("#rv-resolved");
  await page.selectOption("#rv-satisfaction", "satisfied");
  await page.fill("#act-reason", "电话回访，居民满意");
  await page.click("#act-visit");
  await page.waitForSelector('#case-timeline li[data-type="return_visit"]:has-text("居民满意")');
  // What was done and what the resident is told, before closing.
  await page.selectOption("#act-resolution", "resolved");
  await page.fill("#act-summary", "已清理楼道充电线路");
  await page.click("#act-resolution-save");
  await page.waitForFunction(() => [...document.querySelectorAll("#case-facts dd")].some((d) => d.textContent.includes("已清理楼道充电线路")));
  await page.fill("#act-reply", "您反映的问题已处理完毕");
  await page.click("#act-reply-save");
  await page.waitForFunction(() => [...document.querySelectorAll("#case-facts dd")].some((d) => d.textContent === "您反映的问题已处理完毕"));
  await page.click('#act-transitions button[data-to="closed"]');
  await page.waitForFunction(() => document.querySelector("#case-facts dd").textContent === "已结案");
  assert.equal(await page.textContent("#act-error"), "");
  await page.click("#case-close");

  // A title two people changed at once: the office keeps one of them.
  await page.fill("#case-q", "");
  await page.selectOption("#case-status", "");
  await page.check("#case-conflicted");
  await search(["conflict=true"]);
  let settledRegister = false;
  const conflicted = await page.locator("#cases tbody tr").count();
  for (let i = 0; i < conflicted && !settledRegister; i++) {
    await openRow("#cases", i);
    if (await page.isVisible("#case-registers")) {
      const choice = page.locator('#case-register-list div[data-field="title"] button').first();
      const kept = (await choice.textContent()).slice(3, -1);
      await choice.click();
      await page.waitForFunction(() => document.querySelector("#case-registers").hidden);
      assert.ok((await page.textContent("#case-title")).endsWith(kept), `kept ${kept}`);
      settledRegister = true;
    }
  }
  await page.click("#case-close");
  assert.ok(settledRegister, "the demo has a title changed twice at once");
  await page.uncheck("#case-conflicted");

  // A worker's request for more time, granted from the list of requests.
  await page.fill("#case-q", "");
  await page.selectOption("#case-status", "");
  await page.check("#case-extension");
  await search(["extension_requested=true"]);
  const waiting = Number((await page.textContent("#cases-count")).match(/\d+/)[0]);
  assert.ok(waiting > 0, "the demo's workers asked for time");
  await page.locator("#cases tbody tr").first().click();
  await page.waitForSelector("#act-grant");
  assert.match(await page.textContent("#case-flags"), /申请延期待批/);
  await page.click("#act-grant");
  await page.waitForFunction(() => document.querySelector("#act-extension").hidden);
  assert.doesNotMatch(await page.textContent("#case-flags"), /申请延期待批/);
  await page.waitForSelector('#case-timeline li[data-type="deadline_change"]:has-text("同意延期")');
  await page.click("#case-close");
  await search(["extension_requested=true"]);
  await page.waitForFunction((n) => document.querySelector("#cases-count").textContent === `共 ${n} 件`, waiting - 1);
  await page.uncheck("#case-extension");

  // The list exports as the clerk filtered it: CSV with a byte-order mark
  // and Chinese headers, and Excel.
  await page.fill("#case-q", "充电");
  await search(["q="]);
  const [csvDownload] = await Promise.all([page.waitForEvent("download"), page.click("#cases-csv")]);
  assert.equal(csvDownload.suggestedFilename(), "cases.csv");
  const csvBytes = readFileSync(await csvDownload.path());
  assert.deepEqual([...csvBytes.subarray(0, 3)], [0xef, 0xbb, 0xbf]);
  const csvLines = csvBytes.subarray(3).toString("utf8").split("\r\n").filter((l) => l);
  assert.ok(csvLines[0].startsWith("案件号,工单号,标题"), csvLines[0]);
  assert.equal(csvLines.length - 1, Number((await page.textContent("#cases-count")).match(/\d+/)[0]), "every matching case");
  const [xlsxDownload] = await Promise.all([page.waitForEvent("download"), page.click("#cases-xlsx")]);
  assert.equal(xlsxDownload.suggestedFilename(), "cases.xlsx");
  assert.equal(readFileSync(await xlsxDownload.path()).subarray(0, 2).toString(), "PK");
  await page.fill("#case-q", "");

  // A council meeting convened from the office for the closed case, with
  // an attendee and an action item that is overdue until it is done and
  // verified with a photo.
  await page.click('nav button[data-tab="meetings"]');
  await page.waitForSelector("#meetings tbody tr");
  await page.fill("#cv-topic", "电动车充电议事会");
  await page.selectOption("#cv-level", "community");
  await page.selectOption("#cv-format", "hybrid");
  await page.fill("#cv-venue", "社区议事厅");
  await page.fill("#cv-group", "幸福社区云议事群");
  await page.fill("#cv-convener", "社区书记");
  await page.fill("#cv-cases", caseNo);
  await page.fill("#cv-agenda", "一、通报情况；二、各方发言；三、形成措施");
  await page.click("#cv-submit");
  await page.waitForFunction(() => !document.querySelector("#meeting").hidden
    && document.querySelector("#meeting-title").textContent.includes("电动车充电议事会"));
  await page.waitForSelector(`#meeting-cases li:has-text("${caseNo}")`);
  await page.selectOption("#at-role", "respondent");
  await page.fill("#at-org", "幸福物业");
  await page.fill("#at-name", "王经理");
  await page.fill("#at-contact", "13700000000");
  await page.click("#at-add");
  await page.waitForSelector('#meeting-attendees li:has-text("幸福物业")');
  await page.fill("#mt-agreement", "物业一个月内安装充电桩");
  await page.click("#mt-agreement-add");
  await page.waitForSelector('#meeting-agreements li:has-text("充电桩")');
  const yesterday = await page.evaluate(() => {
    const d = new Date(Date.now() - 86400000);
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  });
  await page.fill("#it-text", "安装集中充电桩");
  await page.fill("#it-owner", "幸福物业");
  await page.fill("#it-due", yesterday);
  await page.selectOption("#it-case", { index: 1 });
  await page.click("#it-add");
  const item = page.locator('#meeting-items tbody tr:has-text("安装集中充电桩")');
  await item.waitFor();
  await item.locator('button[data-to="agreed"]').click();
  await page.waitForSelector('#meeting-items tbody tr[data-status="agreed"]:has-text("安装集中充电桩")');
  assert.match(await item.textContent(), /已逾期/);
  await snap("5-meeting");
  // The board across meetings: overdue first, opened from there.
  await page.click("#meeting-close");
  await page.click('nav button[data-tab="board"]');
  await page.selectOption("#board-filter", "overdue=true");
  await page.waitForFunction(() => document.querySelector("#board").dataset.query === "overdue=true");
  await page.waitForSelector('#board tbody tr:has-text("安装集中充电桩")');
  assert.ok((await page.locator("#board tbody tr").allTextContents()).every((t) => t.includes("已逾期")), "only overdue items");
  await snap("6-board");
  await page.locator('#board tbody tr:has-text("安装集中充电桩")').click();
  await item.waitFor();
  for (const to of ["in_progress", "done"]) {
    await item.locator(`button[data-to="${to}"]`).click();
    await page.waitForSelector(`#meeting-items tbody tr[data-status="${to}"]:has-text("安装集中充电桩")`);
  }
  await page.setInputFiles("#it-evidence", { name: "充电桩.png", mimeType: "image/png", buffer: photo });
  await item.locator('button[data-to="verified"]').click();
  await page.waitForSelector('#meeting-items tbody tr[data-status="verified"]:has-text("安装集中充电桩")');
  assert.match(await item.textContent(), /1 张/);
  assert.equal(await page.textContent("#meeting-error"), "");
  await page.click("#meeting-close");
  await page.selectOption("#board-filter", "");
  await page.waitForFunction(() => document.querySelector("#board").dataset.query === "");
  await page.selectOption("#board-filter", "overdue=true");
  await page.waitForFunction(() => document.querySelector("#board").dataset.query === "overdue=true");
  assert.equal(await page.locator('#board tbody tr:has-text("安装集中充电桩")').count(), 0);
  await page.click('nav button[data-tab="meetings"]');
  await page.waitForSelector('#meetings tbody tr:has-text("电动车充电议事会")');
  await snap("4-meetings");

  // Figures: the chart renders bars, checked on the screenshot's pixels.
  await page.click('nav button[data-tab="figures"]');
  await page.waitForSelector("#figures-chart svg rect[data-rate]");
  const bars = await page.locator("#figures-chart svg rect[data-rate]").count();
  assert.ok(bars >= 9 * 4, `a bar per rate per grid (${bars})`);
  await snap("7-figures");
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
  // The trend by month, and a date range: from tomorrow on, nothing.
  await page.waitForSelector("#figures-trend svg rect[data-month]");
  assert.ok(await page.locator("#figures-trend svg polyline").count() >= 1, "a rate line");
  const tomorrow = await page.evaluate(() => {
    const d = new Date(Date.now() + 86400000);
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  });
  await page.fill("#fig-from", tomorrow);
  await page.click("#fig-apply");
  await page.waitForFunction(() => (document.querySelector("#figures-table").dataset.query || "").includes("from="));
  assert.equal(await page.locator("#figures-total .card b").first().textContent(), "0");
  await page.fill("#fig-from", "");
  await page.selectOption("#group-by", "community");
  await page.waitForFunction(() => document.querySelectorAll("#figures-table tbody tr").length === 3);
  assert.match(await page.textContent("#figures-table tbody"), /幸福社区/, "communities by name");
  // Grouped by category, meetings make no row of blanks.
  await page.selectOption("#group-by", "category");
  await page.waitForFunction(() => (document.querySelector("#figures-table").dataset.query || "").startsWith("category"));
  assert.doesNotMatch(await page.textContent("#figures-table tbody"), /未填/);
  assert.match(await page.textContent("#figures-table tbody"), /安全·消防/);

  // Devices and their last sync.
  await page.click('nav button[data-tab="devices"]');
  await page.waitForSelector("#devices tbody tr");
  assert.ok((await page.textContent("#devices-stale")).includes("未同步"));
  await snap("8-devices");

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
  assert.doesNotMatch(await page.innerText("body"), mobile);
  await page.fill("#case-q", "139");
  await page.click("#case-search-button");
  await page.waitForFunction(() => (document.querySelector("#cases").dataset.query || "").includes("q=139"));
  assert.doesNotMatch(await page.innerText("body"), mobile);

  // A street login: no resident's phone number on any of its screens —
  // the attention list, a case, the case list, a meeting with residents
  // at the table, the action-item board.
  await page.click("#logout");
  await page.waitForSelector("#login-form");
  await page.fill("#token", streetToken);
  await page.click("#login-button");
  await page.waitForSelector("#overdue tbody tr");
  assert.doesNotMatch(await page.innerText("body"), mobile);
  await page.locator("#overdue tbody tr").first().click();
  await page.waitForSelector("#case-timeline li");
  assert.doesNotMatch(await page.innerText("body"), mobile);
  await page.click("#case-close");
  await page.click('nav button[data-tab="cases"]');
  await page.waitForSelector("#cases tbody tr");
  assert.doesNotMatch(await page.innerText("body"), mobile);
  await page.click('nav button[data-tab="meetings"]');
  await page.waitForSelector('#meetings tbody tr:has-text("居民议事协商会")');
  await page.locator('#meetings tbody tr:has-text("居民议事协商会")').first().click();
  await page.waitForSelector('#meeting-attendees li:has-text("物业公司")');
  const seen = await page.innerText("body");
  assert.doesNotMatch(seen, mobile);
  assert.doesNotMatch(seen, /赵女士/, "a requester's name is personal data");
  await page.click("#meeting-close");
  await page.click('nav button[data-tab="board"]');
  await page.waitForSelector("#board tbody tr");
  assert.doesNotMatch(await page.innerText("body"), mobile);
  assert.equal(failures.length, 0, failures.join("\n"));
  console.log(`dashboard ok: ${overdue} overdue, ${conflicts} conflicted, ${bars} bars, ${colored.blue}+${colored.red} bar pixels`);
} finally {
  await browser.close();
}
