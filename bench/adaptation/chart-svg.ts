import { ADAPTIVE, type PolicyCell } from './summary.js';

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const STATIC_FILLS = ['#7f8c99', '#9aa6b2', '#b5bfc9', '#c9a26b', '#a3b18a', '#8e7dbe', '#6fa8bd'];

/**
 * Median total time per profile and policy as horizontal bars on a linear scale (the policies
 * differ by tens of percent, not orders of magnitude), each with a whisker from the fastest to
 * the slowest run. The adaptive policy is green; a dashed line in each group marks the best
 * static median. Plain SVG, like the handoff chart.
 */
export function adaptationChart(title: string, subtitle: string, cells: PolicyCell[], describe: (profile: string) => string): string {
  const profiles = [...new Set(cells.map((c) => c.profile))];
  const policies = [ADAPTIVE, ...[...new Set(cells.map((c) => c.policy))].filter((p) => p !== ADAPTIVE)];
  const fill = (p: string) => (p === ADAPTIVE ? '#1b7f5b' : STATIC_FILLS[(policies.indexOf(p) - 1) % STATIC_FILLS.length]!);
  const bar = 13;
  const left = 120;
  const plotWidth = 600;
  const top = 84;
  const groupHeight = policies.length * bar + 34;
  const height = top + profiles.length * groupHeight + 36;
  const width = left + plotWidth + 150;
  const hi = Math.max(10, ...cells.map((c) => c.maxSeconds ?? 0)) * 1.05;
  const step = hi > 150 ? 30 : hi > 60 ? 15 : 10;
  const x = (s: number) => left + (s / hi) * plotWidth;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${left}" y="22" font-size="15" font-weight="bold">${escape(title)}</text>`);
  out.push(`<text x="${left}" y="40" font-size="11" fill="#555">${escape(subtitle)}</text>`);
  policies.forEach((p, i) => {
    const lx = left + (i % 4) * 150;
    const ly = 52 + Math.floor(i / 4) * 14;
    out.push(`<rect x="${lx}" y="${ly}" width="11" height="11" fill="${fill(p)}"/><text x="${lx + 15}" y="${ly + 10}" font-size="11">${escape(p)}</text>`);
  });
  for (let s = 0; s <= hi; s += step) {
    out.push(`<line x1="${x(s)}" y1="${top}" x2="${x(s)}" y2="${height - 30}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${x(s)}" y="${height - 18}" text-anchor="middle" fill="#555">${s}</text>`);
  }
  out.push(`<text x="${left + plotWidth / 2}" y="${height - 4}" text-anchor="middle" fill="#555">total handoff time, seconds: median bar, min–max whisker</text>`);
  profiles.forEach((profile, gi) => {
    const gy = top + gi * groupHeight + 16;
    out.push(`<text x="${left}" y="${gy - 4}" font-weight="bold">${escape(profile)}</text><text x="${left + 70}" y="${gy - 4}" fill="#555" font-size="11">${escape(describe(profile))}</text>`);
    const mine = cells.filter((c) => c.profile === profile);
    const statics = mine.filter((c) => c.policy !== ADAPTIVE && c.medianSeconds !== null);
    policies.forEach((p, pi) => {
      const c = mine.find((v) => v.policy === p);
      const y = gy + pi * bar;
      out.push(`<text x="${left - 6}" y="${y + bar - 3}" text-anchor="end" font-size="10" fill="#333">${escape(p)}</text>`);
      if (!c || c.medianSeconds === null) {
        if (c) out.push(`<text x="${left + 4}" y="${y + bar - 3}" font-size="10" fill="#b03a2e">no completed run (${c.runs})</text>`);
        return;
      }
      out.push(`<rect x="${left}" y="${y + 1}" width="${(x(c.medianSeconds) - left).toFixed(1)}" height="${bar - 2}" fill="${fill(p)}"/>`);
      const mid = y + bar / 2;
      out.push(`<line x1="${x(c.minSeconds!).toFixed(1)}" y1="${mid}" x2="${x(c.maxSeconds!).toFixed(1)}" y2="${mid}" stroke="#222"/>`);
      out.push(`<text x="${(x(c.maxSeconds!) + 4).toFixed(1)}" y="${y + bar - 3}" font-size="10" fill="#333">${c.medianSeconds.toFixed(1)} s</text>`);
    });
    if (statics.length) {
      const best = Math.min(...statics.map((c) => c.medianSeconds!));
      out.push(`<line x1="${x(best).toFixed(1)}" y1="${gy}" x2="${x(best).toFixed(1)}" y2="${gy + policies.length * bar}" stroke="#1b7f5b" stroke-dasharray="3,3"/>`);
    }
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
