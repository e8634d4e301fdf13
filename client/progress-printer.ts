import { describeTracking } from '../engine/contract.js';
import type { HandoffProgress, HandoffResult } from '../workflows/definitions.js';

/** Prints each step as it starts and ends, with its duration. */
export function progressPrinter(write: (line: string) => void): (p: HandoffProgress) => void {
  const reported = new Set<string>();
  return (p) => {
    for (const s of p.steps) {
      const key = `${s.step}:${s.endedAt !== undefined}`;
      if (reported.has(key)) continue;
      reported.add(key);
      if (s.endedAt === undefined) write(`  … ${s.step}`);
      else write(`  ✓ ${s.step} (${s.endedAt - s.startedAt} ms)`);
    }
  };
}

export function summarize(r: HandoffResult): string[] {
  const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
  return [
    `handoff ${r.workflowId}: VM ${r.vmId} moved ${r.source} → ${r.target} on base ${r.baseImageId}`,
    `  total ${r.totalMs} ms, downtime ${r.downtimeMs} ms (host), guest silent ${r.guestGapMs ?? '?'} ms at most (${r.guestGapParts.acrossStopMs ?? '?'} across the stop: ${r.guestGapParts.beforePauseMs ?? '?'} before the pause + downtime + ${r.guestGapParts.afterResumeMs ?? '?'} after cont; ${r.guestGapParts.liveMs} while live), ${mb(r.bytesSent)} sent`,
    `  downtime by step: ${r.downtimeBreakdown.map((d) => `${d.step} ${d.ms} ms`).join(' · ')}`,
    ...(r.memoryTracking ? [`  written pages found by ${describeTracking(r.memoryTracking)}`] : []),
    `  overlay: ${r.memoryPages} memory pages, ${r.diskBlocks} disk blocks, ${r.deviceStateBytes} bytes of device state`,
    ...(r.postCopy
      ? [
          `  post-copy: ${r.postCopy.reason}; ${r.postCopy.stalePages} stale pages${r.postCopy.fetch.diskBlocks ? ` and ${r.postCopy.fetch.diskBlocks} disk blocks` : ''} fetched after the resume in ${r.postCopy.fetch.ms} ms, ${r.postCopy.fetch.remoteFaults} on demand (median ${r.postCopy.fetch.faultLatencyMedianMs ?? '?'} ms, max ${r.postCopy.fetch.faultLatencyMaxMs ?? '?'} ms), ${r.postCopy.fetch.refused} refused on arrival, ${r.postCopy.fetch.reconnects} reconnects; whole memory ${r.postCopy.memoryDigestConfirmed ? 'confirmed by the source' : 'NOT confirmed'}`,
        ]
      : []),
    `  live pre-copy: ${r.epochs.map((e) => `${e.live ? 'epoch' : 'stop-and-copy'} ${e.epoch}: ${e.memoryPages + e.diskBlocks} chunks in ${e.ms} ms`).join('; ')} (${r.precopy.stopReason})`,
    `  pipeline: ${mb(r.stages.inputBytes)} in → ${mb(r.stages.data * 4096)} after zero/dedup (${r.stages.zero} zero, ${r.stages.baseRefs} base refs, ${r.stages.selfRefs} self refs; ${r.stages.againstPrevious} sent again as an XOR with their previous send) → ${mb(r.stages.payloadBytes)} compressed`,
    `  modes: ${Object.entries(r.modesUsed).map(([m, n]) => `${m} ×${n}`).join(', ')}${r.modeSwitches.length ? `; switches: ${r.modeSwitches.map((s) => `${s.from}→${s.to} (${s.reason})`).join('; ')}` : ''}`,
    ...(r.reconciled
      ? [`  resumed from an interrupted attempt: the target held ${r.reconciled.memoryPagesHeld} pages and ${r.reconciled.diskBlocksHeld} blocks, ${r.reconciled.memoryPagesKept} and ${r.reconciled.diskBlocksKept} of them kept, not sent again (reconcile: ${mb(r.reconciled.holdingsBytes)} back, ${r.reconciled.ms} ms)`]
      : []),
    `  verified: ${r.verified} (memory ${r.memoryDigest.slice(0, 12)}…, disk ${r.diskDigest.slice(0, 12)}…)`,
    `  guestContinued: ${r.guestContinued} (heartbeat ${r.heartbeatAtStop} at stop, ${r.heartbeatAfterResume} after resume)`,
  ];
}
