// The designer's page in a real headless Chromium, as a designer uses it:
// sign in, upload, try, roll back, open a failed call and replay it.
// tests/all/page.rs starts the service and runs this with:
//   ACTION_HOST_URL     the service, on a loopback port
//   DESIGNER_TOKEN, OPERATOR_TOKEN, INVOKE_TOKEN   each role's token
//   GREETING, GREETING_V2, BROKEN, FIXTURE         component files to upload
//   CX_REQUEST          a Dialogflow CX WebhookRequest as CX sends it
//   SCREENSHOT          where to write the picture of the try-it panel
//   FAILURE_SCREENSHOT  where to write the whole page when a step fails
//   CHROMIUM            the browser to drive
// It exits 0 when every step saw what it should, else prints the step.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("ACTION_HOST_URL");
const timeout = 15_000;

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  // The sandbox needs user namespaces, which a container or root lacks.
  args: ["--no-sandbox", "--disable-gpu"],
});
const context = await browser.newContext({
  viewport: { width: 1280, height: 900 },
  locale: "en-GB",
  timezoneId: "Europe/London",
});
const page = await context.newPage();
page.setDefaultTimeout(timeout);
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("console", (message) => {
  // The browser logs each refused request; the steps provoke some on purpose.
  const refused = /^Failed to load resource: the server responded with a status of 4\d\d/;
  if (message.type() === "error" && !refused.test(message.text())) {
    problems.push(`console: ${message.text()}`);
  }
});
// The page may talk to the service and nothing else.
const requested = new Set();
page.on("request", (request) => requested.add(new URL(request.url()).origin));

let step = "start";
const run = async (name, work) => {
  step = name;
  await work();
  console.log(`ok: ${name}`);
};

/// Every field on the page has a label a screen reader reads.
const everyFieldLabelled = async () => {
  const unlabelled = await page.$$eval("input, select, textarea", (fields) =>
    fields.filter((f) => f.type !== "hidden" && f.labels.length === 0 && !f.getAttribute("aria-label")).map((f) => f.outerHTML));
  assert.deepEqual(unlabelled, [], "fields without a label");
};

/// How the greeting greets someone in Tokyo now.
const tokyoGreeting = () => {
  const hour = Number(new Intl.DateTimeFormat("en-GB", { hour: "numeric", hourCycle: "h23", timeZone: "Asia/Tokyo" }).format(new Date()));
  if (hour >= 5 && hour < 12) return "Good morning";
  if (hour >= 12 && hour < 17) return "Good afternoon";
  if (hour >= 17 && hour < 22) return "Good evening";
  return "Hello";
};

const signIn = async (token) => {
  await page.getByLabel("Token").fill(token);
  // By keyboard, as anyone may.
  await page.getByLabel("Token").press("Enter");
};

try {
  await run("a wrong token is not signed in and sees no data", async () => {
    await page.goto(base);
    await everyFieldLabelled();
    await signIn("not-a-token-of-this-service");
    await page.getByRole("alert").filter({ hasText: "Not signed in: unknown token" }).waitFor();
    await signIn(env("INVOKE_TOKEN"));
    await page.getByRole("alert").filter({ hasText: "Not signed in" }).filter({ hasText: "invoke token" }).waitFor();
    assert.equal(await page.locator("table").count(), 0, "no data before signing in");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("action-host-token")), null);
  });

  await run("sign in as a designer", async () => {
    await signIn(env("DESIGNER_TOKEN"));
    await page.getByRole("heading", { name: "Actions", exact: true }).waitFor();
    await page.getByText("Signed in as designer").waitFor();
    assert.ok(!page.url().includes(env("DESIGNER_TOKEN")), "the token is never in the URL");
    await everyFieldLabelled();
  });

  await run("upload a broken file and see the reason", async () => {
    await page.getByLabel("Action name").fill("broken");
    await page.getByLabel("Component").setInputFiles(env("BROKEN"));
    await page.getByRole("button", { name: "Upload" }).click();
    const alert = page.getByRole("alert").filter({ hasText: "WebAssembly" });
    await alert.waitFor();
    console.log(`  the page said: ${await alert.innerText()}`);
    assert.equal(await page.getByRole("link", { name: "broken" }).count(), 0);
  });

  await run("upload the greeting", async () => {
    await page.getByLabel("Action name").fill("");
    await page.getByLabel("Component").setInputFiles(env("GREETING"));
    assert.equal(await page.getByLabel("Action name").inputValue(), "greeting", "named after the file");
    await page.getByRole("button", { name: "Upload" }).click();
    await page.getByRole("heading", { name: "greeting", exact: true }).waitFor();
    await page.getByRole("cell", { name: "first_name", exact: true }).first().waitFor();
    await everyFieldLabelled();
  });

  await run("try it with a name and a time zone, and see the greeting", async () => {
    const tryIt = page.locator("#try-it");
    await tryIt.getByLabel("first_name").fill("Ada Lovelace");
    assert.equal(await tryIt.getByLabel("is_member").getAttribute("type"), "checkbox", "a boolean is a checkbox");
    await tryIt.getByLabel("is_member").check();
    await tryIt.getByLabel("membership_tier").fill("gold");
    await tryIt.getByLabel("Time zone").selectOption("Asia/Tokyo");
    const started = tokyoGreeting();
    await tryIt.getByRole("button", { name: "Run" }).click();
    const result = page.locator("#try-result");
    await result.getByText("success", { exact: true }).waitFor();
    const greeting = await result.locator("ul.messages li").first().innerText();
    assert.match(greeting, /, Ada! Thanks for being a gold member\.$/);
    // Tokyo's part of day as the host computes it from the zone (before or
    // after the call, should an hour have turned in between).
    const expected = [started, tokyoGreeting()];
    assert.ok(expected.some((salutation) => greeting.startsWith(`${salutation}, `)), `${greeting}: expected ${expected}`);
    console.log(`  the greeting: ${greeting}`);
    await tryIt.screenshot({ path: env("SCREENSHOT") });
  });

  await run("what an action or a caller wrote is shown as text, never run", async () => {
    const tryIt = page.locator("#try-it");
    const markup = '<img src="/x" onerror="window.pwned = 1">Eve';
    await tryIt.getByLabel("first_name").fill(markup);
    await tryIt.getByLabel("is_member").uncheck();
    await tryIt.getByRole("button", { name: "Run" }).click();
    const said = page.locator("#try-result ul.messages li").first();
    await said.filter({ hasText: "<img" }).waitFor();
    assert.equal(await page.locator("#try-result img").count(), 0);
    assert.equal(await page.evaluate(() => window.pwned), undefined);
  });

  await run("a designer sees the grants but cannot change them", async () => {
    await page.getByText("Only the operator can grant a destination.").waitFor();
    assert.equal(await page.locator("#grants").count(), 0);
    assert.equal(await page.getByRole("button", { name: /^Grant / }).count(), 0);
  });

  await run("a platform's request, pasted, answers as the platform would receive it", async () => {
    const request = JSON.parse(readFileSync(env("CX_REQUEST"), "utf8"));
    request.sessionInfo.parameters = { first_name: "Grace Hopper" };
    await page.getByLabel("Platform").selectOption("dialogflow-cx");
    await page.getByLabel("Request body").fill(JSON.stringify(request, null, 2));
    await page.getByRole("button", { name: "Send" }).click();
    const answer = page.locator("#platform-answer");
    await answer.getByText("What dialogflow-cx would receive: 200").waitFor();
    const body = JSON.parse(await answer.locator("pre").innerText());
    assert.match(body.fulfillmentResponse.messages[0].text.text[0], /, Grace!$/);
    assert.match(body.sessionInfo.parameters.greeting, /, Grace!$/);
  });

  await run("a second version, then roll back to the first", async () => {
    await page.getByRole("link", { name: "Actions", exact: true }).first().click();
    await page.getByLabel("Action name").fill("greeting");
    // Dropped on the page this time, as from a file manager.
    const dropped = await page.evaluateHandle(({ bytes, name }) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "application/wasm" }));
      return transfer;
    }, { bytes: [...readFileSync(env("GREETING_V2"))], name: "greeting-v2.wasm" });
    await page.dispatchEvent("#drop", "drop", { dataTransfer: dropped });
    await page.getByText("Chosen: greeting-v2.wasm").waitFor();
    await page.getByRole("button", { name: "Upload" }).click();
    await page.getByText(/^Version 2 ·/).waitFor();
    await page.getByRole("button", { name: "Roll back to version 1" }).click();
    await page.locator("#versions-status").getByText("Version 1 is serving.").waitFor();
    await page.getByText(/^Version 1 ·/).waitFor();
  });

  await run("a failed call is recorded; open its record and replay it", async () => {
    const tryIt = page.locator("#try-it");
    await tryIt.getByLabel("first_name").fill("   ");
    await tryIt.getByRole("button", { name: "Run" }).click();
    await page.locator("#try-result").getByText("first_name is empty").waitFor();
    // A try's record is written before its answer: the history has it at once.
    await page.reload();
    await page.getByLabel("Show").selectOption("not-success");
    await page.locator("#history tbody tr").filter({ hasText: "invalid-input" }).first().getByRole("link").click();
    await page.getByRole("heading", { name: "Recorded call" }).waitFor();
    await page.getByText("first_name is empty").first().waitFor();
    await everyFieldLabelled();
    await page.getByRole("button", { name: "Replay" }).click();
    await page.locator("#replay-result").getByText("The replay did what the record did.").waitFor();
    await page.getByLabel("Against").selectOption("2");
    await page.getByRole("button", { name: "Replay" }).click();
    await page.locator("#replay-result").getByRole("heading", { name: "Replayed on version 2" }).waitFor();
  });

  await run("signing out forgets the token", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("Token").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("action-host-token")), null);
  });

  await run("the operator grants what an action asks for", async () => {
    await signIn(env("OPERATOR_TOKEN"));
    await page.getByText("Signed in as operator").waitFor();
    await page.getByRole("link", { name: "Actions", exact: true }).first().click();
    await page.getByLabel("Action name").fill("fixture");
    await page.getByLabel("Component").setInputFiles(env("FIXTURE"));
    await page.getByRole("button", { name: "Upload" }).click();
    await page.getByRole("heading", { name: "fixture", exact: true }).waitFor();
    const asked = page.getByRole("row").filter({ hasText: "https://api.example.com" });
    await asked.getByText("not granted").waitFor();
    await everyFieldLabelled();
    await page.getByRole("button", { name: "Grant https://api.example.com" }).click();
    assert.equal(await page.getByLabel("Grants").inputValue(), "https://api.example.com");
    await page.getByRole("button", { name: "Save grants" }).click();
    await page.locator("#grants-status").getByText("Grants saved.").waitFor();
    const granted = page.getByRole("row").filter({ hasText: "https://api.example.com" });
    assert.equal(await granted.getByText("not granted").count(), 0);
    assert.equal(await granted.locator("td").nth(1).innerText(), "https://api.example.com");
  });

  await run("try it has a field for each kind, and config is edited in place", async () => {
    const tryIt = page.locator("#try-it");
    const field = (name) => tryIt.getByLabel(new RegExp(`^${name}\\b`));
    const kinds = {};
    for (const name of ["count", "ratio", "flag", "when", "data"]) {
      kinds[name] = await field(name).evaluate((el) => `${el.tagName.toLowerCase()}:${el.type}:${el.step || ""}`);
    }
    assert.deepEqual(kinds, {
      count: "input:number:1",
      ratio: "input:number:any",
      flag: "input:checkbox:",
      when: "input:datetime-local:1",
      data: "textarea:textarea:",
    });
    await field("behave").fill("echo");
    await field("data").fill("{not json");
    await tryIt.getByRole("button", { name: "Run" }).click();
    await tryIt.getByRole("alert").getByText("data is not valid JSON").waitFor();
    await field("count").fill("3");
    await field("ratio").fill("0.5");
    await field("flag").check();
    await field("when").fill("2026-12-03T10:00:00");
    await field("data").fill('{"a": [1, 2]}');
    await tryIt.getByRole("button", { name: "Run" }).click();
    const result = page.locator("#try-result");
    await result.getByText("success", { exact: true }).waitFor();
    const value = async (name) => result.getByRole("row").filter({ hasText: name }).locator("td").nth(1).innerText();
    assert.equal(await value("count"), "3");
    assert.equal(await value("ratio"), "0.5");
    assert.equal(await value("flag"), "true");
    assert.match(await value("when"), /^"2026-12-03T10:00:00/);
    assert.match(await value("data"), /"a"/);

    await page.getByLabel("greeting_prefix").fill("Hi");
    await page.getByRole("button", { name: "Save config" }).click();
    await page.getByText("Saved.", { exact: true }).waitFor();
    await page.reload();
    assert.equal(await page.getByLabel("greeting_prefix").inputValue(), "Hi");
    // Keys every JavaScript object has are still fields of their own, empty
    // until set, and saved as keys like any other.
    const own = (key) => page.getByLabel(key, { exact: true });
    for (const key of ["constructor", "__proto__"]) assert.equal(await own(key).inputValue(), "");
    await own("constructor").fill("built");
    await own("__proto__").fill("kept");
    await page.getByRole("button", { name: "Save config" }).click();
    await page.getByText("Saved.", { exact: true }).waitFor();
    await page.reload();
    assert.equal(await own("constructor").inputValue(), "built");
    assert.equal(await own("__proto__").inputValue(), "kept");
  });

  await run("record every call, then replay one against a version that differs", async () => {
    await page.getByLabel("Record", { exact: true }).selectOption("all");
    await page.getByRole("button", { name: "Save recording" }).click();
    await page.getByText("Saved.", { exact: true }).waitFor();
    const tryIt = page.locator("#try-it");
    await tryIt.getByLabel(/^behave\b/).fill("echo");
    await tryIt.getByLabel(/^label\b/).fill("from the page");
    await tryIt.getByRole("button", { name: "Run" }).click();
    await page.getByRole("link", { name: "Open this call's record" }).click();
    await page.getByRole("heading", { name: "Recorded call" }).waitFor();
    // The greeting as version 2 of this action: the same call now fails.
    await page.evaluate(async (bytes) => {
      const response = await fetch(`/v1/actions/fixture`, {
        method: "PUT",
        headers: { Authorization: `Bearer ${sessionStorage.getItem("action-host-token")}` },
        body: new Uint8Array(bytes),
      });
      if (!response.ok) throw new Error(await response.text());
    }, [...readFileSync(env("GREETING"))]);
    await page.reload();
    await page.getByLabel("Against").selectOption("");
    await page.getByRole("button", { name: "Replay" }).click();
    const result = page.locator("#replay-result");
    await result.getByText(/difference\(s\) from the record/).waitFor();
    const differs = result.locator("tr.differs");
    assert.ok(await differs.count() > 0, "the differences are marked");
    await differs.filter({ hasText: "result" }).first().waitFor();
    await result.getByRole("heading", { name: "Replayed on version 2" }).waitFor();
  });

  assert.deepEqual(problems, [], "the page reported errors");
  assert.deepEqual([...requested], [new URL(base).origin], "the page loaded only from the service");
  console.log("every step passed");
} catch (error) {
  console.error(`FAILED at "${step}": ${error.stack || error}`);
  const shot = env("FAILURE_SCREENSHOT");
  await page.screenshot({ path: shot, fullPage: true }).then(() => console.error(`the page as it was: ${shot}`), () => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
