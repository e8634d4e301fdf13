/**
 * A grouped horizontal bar chart of total time per (workload, rate), one bar per system, on a
 * log scale (QEMU classic can be two orders of magnitude above the floor). Plain SVG text: a
 * charting library would bring a DOM or a browser into the benchmark for one figure.
 */
export interface ChartBar {
  group: string;
  series: string;
  seconds: number;
  /** Did not finish: the bar is a lower bound, drawn hatched and labelled "≥". */
  lowerBound: boolean;
}

const COLORS: Record<string, string> = {
  handoff: '#1b7f5b',
  'handoff-precopy': '#6fb59a',
  'qemu-tuned': '#d08c1e',
  'qemu-classic': '#b03a2e',
  floor: '#5b6b7a',
};

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function totalTimeChart(title: string, series: string[], bars: ChartBar[]): string {
  const groups = [...new Set(bars.map((b) => b.group))];
  const bar = 14;
  const gap = 14;
  const left = 150;
  const plotWidth = 620;
  const top = 56;
  const groupHeight = series.length * bar + gap;
  const height = top + groups.length * groupHeight + 40;
  const width = left + plotWidth + 110;
  const values = bars.map((b) => b.seconds).filter((s) => s > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...values, 1))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values, 10))));
  const x = (s: number) => left + (Math.log10(Math.max(s, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * plotWidth;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  out.push('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f2d7d5"/><line x1="0" y1="0" x2="0" y2="6" stroke="#b03a2e" stroke-width="3"/></pattern></defs>');
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${left}" y="22" font-size="15" font-weight="bold">${escape(title)}</text>`);
  series.forEach((s, i) => {
    const lx = left + i * 150;
    out.push(`<rect x="${lx}" y="32" width="12" height="12" fill="${COLORS[s] ?? '#888'}"/><text x="${lx + 16}" y="42">${escape(s)}</text>`);
  });
  for (let d = lo; d <= hi; d *= 10) {
    const gx = x(d);
    out.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${height - 34}" stroke="#ddd"/>`);
    out.push(`<text x="${gx}" y="${height - 20}" text-anchor="middle" fill="#555">${d >= 1 ? d : d.toFixed(1)} s</text>`);
  }
  out.push(`<text x="${left + plotWidth / 2}" y="${height - 4}" text-anchor="middle" fill="#555">total time, seconds (log scale)</text>`);
  groups.forEach((g, gi) => {
    const gy = top + gi * groupHeight;
    out.push(`<text x="${left - 8}" y="${gy + (series.length * bar) / 2 + 4}" text-anchor="end">${escape(g)}</text>`);
    series.forEach((s, si) => {
      const b = bars.find((v) => v.group === g && v.series === s);
      if (!b) return;
      const y = gy + si * bar;
      const w = Math.max(1, x(b.seconds) - left);
      const fill = b.lowerBound ? 'url(#hatch)' : COLORS[s] ?? '#888';
      out.push(`<rect x="${left}" y="${y + 1}" width="${w.toFixed(1)}" height="${bar - 2}" fill="${fill}"/>`);
      out.push(`<text x="${left + w + 4}" y="${y + bar - 3}" font-size="10" fill="#333">${b.lowerBound ? '≥ ' : ''}${b.seconds.toFixed(1)} s</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
