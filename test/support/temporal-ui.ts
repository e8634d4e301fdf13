import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type Browser, type BrowserServer, type Locator, type Page } from 'playwright-core';

// Drives the Temporal Web UI (2.54.1, served by the CLI's dev server) in Debian's headless
// Chromium. The UI is a SvelteKit app whose workflow pages keep polling the server, so waits are
// on specific elements (the UI's own data-testid attributes), never on network idle.

/** Debian's `chromium` package (infra/setup.sh installs it); Playwright downloads no browser. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** How long any one thing may take to appear: the first page load compiles a large app. */
const APPEAR_MS = 20_000;

/** The UI's default workflow list columns; custom search attributes are appended after them. */
const DEFAULT_LIST_COLUMNS = ['Status', 'Workflow ID', 'Run ID', 'Type', 'Start', 'End'];

export interface UiBrowser {
  page: Page;
  /** The Chromium process, for the record; `close()` ends it. */
  pid: number;
  /** Requests the page made to any origin other than `uiUrl`'s (the UI should make none). */
  offsiteRequests: string[];
  close(): Promise<void>;
}

/**
 * Starts headless Chromium with one page on the UI at `uiUrl`. The workflow list of `namespace`
 * shows `listColumns` (custom search attributes such as `EdgeVmId`) after the default columns: the
 * UI keeps its column choice in localStorage, which is seeded here before the app reads it.
 */
export async function openBrowser(opts: { uiUrl: string; namespace?: string; listColumns?: string[] }): Promise<UiBrowser> {
  const namespace = opts.namespace ?? 'default';
  const uiOrigin = new URL(opts.uiUrl).origin;
  const server: BrowserServer = await chromium.launchServer({
    executablePath: CHROMIUM_PATH,
    headless: true,
    // Small /dev/shm in containers crashes renderers; Debian's wrapper adds this only sometimes.
    args: ['--disable-dev-shm-usage'],
  });
  const pid = server.process().pid!;
  let browser: Browser | undefined;
  try {
    browser = await chromium.connect(server.wsEndpoint());
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, timezoneId: 'UTC' });
    context.setDefaultTimeout(APPEAR_MS);
    const columns = [...DEFAULT_LIST_COLUMNS, ...(opts.listColumns ?? [])].map((label) => ({ label }));
    await context.addInitScript(
      ([key, value]) => window.localStorage.setItem(key, value),
      ['namespace-workflow-table-columns', JSON.stringify({ [namespace]: columns })] as const,
    );
    const offsiteRequests: string[] = [];
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (new URL(url).origin === uiOrigin || url.startsWith('data:')) return route.continue();
      offsiteRequests.push(url);
      return route.abort('blockedbyclient');
    });
    const page = await context.newPage();
    return {
      page,
      pid,
      offsiteRequests,
      close: async () => {
        await Promise.race([browser!.close().catch(() => undefined), sleep(5_000)]);
        // Ends Chromium by its handle whether or not the polite close got through.
        await Promise.race([server.close(), sleep(5_000)]);
        await server.kill();
      },
    };
  } catch (err) {
    await browser?.close().catch(() => undefined);
    await server.kill();
    throw err;
  }
}

/** The list URL filtered by a visibility query, as an auditor would bookmark it. */
export function workflowListUrl(uiUrl: string, query: string, namespace = 'default'): string {
  return `${uiUrl}/namespaces/${encodeURIComponent(namespace)}/workflows?query=${encodeURIComponent(query)}`;
}

export interface ListedWorkflow {
  workflowId: string;
  /** The row's visible text, cells separated by tabs. */
  rowText: string;
  /** Cell text by column label (`Workflow ID`, `Status`, `EdgeVmId`, …). */
  cells: Record<string, string>;
}

/**
 * Opens the workflow list filtered by `EdgeVmId = "<vmId>"` and returns the row of `workflowId`
 * (or, without it, the only row). Reloads until visibility has indexed the workflow.
 */
export async function findHandoffInList(
  page: Page,
  uiUrl: string,
  vmId: string,
  opts: { workflowId?: string; namespace?: string; timeoutMs?: number } = {},
): Promise<ListedWorkflow> {
  const url = workflowListUrl(uiUrl, `EdgeVmId = "${vmId}"`, opts.namespace);
  const deadline = Date.now() + (opts.timeoutMs ?? APPEAR_MS);
  const rows = page.getByTestId('workflows-summary-configurable-table-row');
  const row = opts.workflowId ? rows.filter({ has: page.getByRole('link', { name: opts.workflowId, exact: true }) }) : rows;
  const what = opts.workflowId ? `workflow ${opts.workflowId}` : 'a workflow';
  for (;;) {
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    // The count header appears once the list query has answered, with or without rows.
    await expectVisible(page.getByTestId('workflow-count'), `the workflow count on ${url}`);
    const found = await row.first().waitFor({ timeout: 2_000 }).then(() => true, () => false);
    if (found) break;
    if (Date.now() > deadline) {
      const count = await page.getByTestId('workflow-count').innerText().catch(() => '?');
      throw new Error(`the UI's list for EdgeVmId = "${vmId}" shows no row for ${what} (its count reads "${count.trim()}") at ${url}`);
    }
    await sleep(1_000);
  }
  if (!opts.workflowId && (await rows.count()) !== 1) {
    throw new Error(`the UI's list for EdgeVmId = "${vmId}" has ${await rows.count()} rows; pass the workflow id`);
  }
  const headers = await page.locator('[data-testid^="workflows-summary-table-header-cell-"]').evaluateAll((ths) =>
    ths.map((th) => th.getAttribute('data-testid')!.replace('workflows-summary-table-header-cell-', '')),
  );
  const target = row.first();
  const values = await target.getByTestId('workflows-summary-table-body-cell').allInnerTexts();
  const cells = Object.fromEntries(headers.map((h, i) => [h, (values[i] ?? '').trim()]));
  const workflowId = cells['Workflow ID'] ?? opts.workflowId ?? '';
  return { workflowId, rowText: (await target.innerText()).trim(), cells };
}

/** Follows the list's link to a workflow and waits for its page (heading = workflow id). */
export async function openWorkflow(page: Page, workflowId: string): Promise<void> {
  const link = page.getByTestId('workflows-summary-configurable-table-row').getByRole('link', { name: workflowId, exact: true });
  await expectVisible(link, `a link to workflow ${workflowId} in the list`);
  await link.click();
  await expectVisible(page.getByTestId('workflow-id-heading').filter({ hasText: workflowId }), `the page of workflow ${workflowId}`);
}

export interface UserMetadata {
  /** `staticSummary`, as rendered. */
  summary: string;
  /** `staticDetails`, markdown rendered to text (headings, list items). */
  details: string;
  /** The workflow's `setCurrentDetails`, read by the UI with a query (empty without a worker). */
  currentDetails: string;
}

/**
 * Opens the workflow page's User Metadata tab and reads what it renders. A panel with content is an
 * iframe (`/render?content=…`) holding the markdown rendered; a panel without says "No … available"
 * and reads as ''. Waits until the current details contain `currentDetailsHas` when given.
 */
export async function readUserMetadata(page: Page, opts: { currentDetailsHas?: string } = {}): Promise<UserMetadata> {
  await page.getByTestId('user-metadata-tab').click();
  const frame = (id: string) => page.locator(`#user-metadata-${id}`);
  const body = (id: string) => page.frameLocator(`#user-metadata-${id}`).locator('body');
  // The three panels render together, once the workflow's description has loaded.
  await expectVisible(frame('summary').or(page.getByText('No summary available')), 'the User Metadata tab’s Summary');
  const rendered = async (id: string, what: string) =>
    (await frame(id).count()) ? textWhen(body(id), (t) => t.length > 0, `the User Metadata tab’s ${what}`) : '';
  const summary = await rendered('summary', 'Summary');
  const details = await rendered('details', 'Details');
  const want = opts.currentDetailsHas;
  // The UI queries the workflow for its current details once; its "R" key asks again.
  const requery = () => page.keyboard.press('r');
  const currentDetails = want
    ? await textWhen(body('current-details'), (t) => t.includes(want), `"${want}" in the User Metadata tab’s Current Details`, requery)
    : ((await body('current-details').innerText({ timeout: 2_000 }).catch(() => '')) ?? '').trim();
  return { summary, details, currentDetails };
}

/**
 * Opens the Event History tab and waits for an event row mentioning `text` (a signal's name, a
 * marker's, an activity's summary). The tab refreshes itself while the workflow runs. Returns that
 * row's text.
 */
export async function historyShows(page: Page, text: string, timeoutMs = APPEAR_MS): Promise<string> {
  await page.getByTestId('history-tab').click();
  await expectVisible(page.getByTestId('event-summary-table'), 'the Event History table');
  const row = page.getByTestId('event-summary-row').filter({ hasText: text }).first();
  const found = await row.waitFor({ timeout: timeoutMs }).then(() => true, () => false);
  if (!found) {
    const rows = await page.getByTestId('event-summary-row').allInnerTexts();
    const listing = rows.map((r) => r.replace(/\s+/g, ' ').trim()).join('\n  ');
    throw new Error(`the Event History shows no event mentioning "${text}" within ${timeoutMs} ms; it shows:\n  ${listing}`);
  }
  return (await row.innerText()).replace(/\s+/g, ' ').trim();
}

/** Saves what the page shows now as a PNG: the whole page, or with `viewportOnly` what a reader sees first. */
export async function screenshot(page: Page, path: string, opts: { viewportOnly?: boolean } = {}): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await page.screenshot({ path, fullPage: !opts.viewportOnly, animations: 'disabled', caret: 'hide' });
}

async function expectVisible(locator: Locator, what: string, timeout = APPEAR_MS): Promise<void> {
  try {
    await locator.first().waitFor({ state: 'visible', timeout });
  } catch {
    throw new Error(`the Temporal UI did not show ${what} within ${timeout} ms (page: ${locator.page().url()})`);
  }
}

/** The trimmed text of `locator` once `ok` holds for it; `refresh` is tried every 2 s meanwhile. */
async function textWhen(
  locator: Locator,
  ok: (text: string) => boolean,
  what: string,
  refresh?: () => Promise<void>,
  timeout = APPEAR_MS,
): Promise<string> {
  const deadline = Date.now() + timeout;
  let nextRefresh = Date.now() + 2_000;
  for (;;) {
    const text = ((await locator.innerText({ timeout: 1_000 }).catch(() => '')) ?? '').trim();
    if (ok(text)) return text;
    if (Date.now() > deadline) {
      throw new Error(`the Temporal UI did not show ${what} within ${timeout} ms (it shows "${text}"; page: ${locator.page().url()})`);
    }
    if (refresh && Date.now() > nextRefresh) {
      await refresh();
      nextRefresh = Date.now() + 2_000;
    }
    await sleep(250);
  }
}
