/** Draws the run detail's equity curves on a canvas from `plotLayout` (all geometry lives in curve.ts). */

import { plotLayout, type Series } from './curve';
import { formatEtClock } from './format';

const COLORS: Record<string, string> = { 'in-sample': '#6aa8ff', 'out-of-sample': '#ffb347' };

export function drawEquity(canvas: HTMLCanvasElement, curves: { label: string; series: Series }[]): void {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 800;
  const cssH = canvas.clientHeight || 260;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const lay = plotLayout(cssW, cssH, curves);
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#8a90a0';
  ctx.strokeStyle = '#2c3345';
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  const first = lay.panels[0];
  const last = lay.panels[lay.panels.length - 1];
  if (!first || !last) return;
  const x0 = first.box.left;
  const x1 = last.box.left + last.box.width;
  for (const t of lay.yTicks) {
    ctx.beginPath();
    ctx.moveTo(x0, t.py);
    ctx.lineTo(x1, t.py);
    ctx.stroke();
    ctx.fillText(String(Number(t.value.toPrecision(6))), x0 - 6, t.py);
  }
  ctx.save();
  ctx.translate(12, first.box.top + first.box.height / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = 'center';
  ctx.fillText('cumulative pnl (ticks)', 0, 0);
  ctx.restore();
  for (const p of lay.panels) {
    ctx.strokeStyle = '#3a4256';
    ctx.strokeRect(p.box.left, p.box.top, p.box.width, p.box.height);
    if (lay.zeroY !== null) {
      ctx.strokeStyle = '#5a6276';
      ctx.beginPath();
      ctx.moveTo(p.box.left, lay.zeroY);
      ctx.lineTo(p.box.left + p.box.width, lay.zeroY);
      ctx.stroke();
    }
    ctx.setLineDash([3, 3]);
    for (const b of p.breaks) {
      ctx.beginPath();
      ctx.moveTo(b, p.box.top);
      ctx.lineTo(b, p.box.top + p.box.height);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    ctx.fillStyle = '#8a90a0';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const t of p.xTicks) ctx.fillText(formatEtClock(t.ms), t.px, p.box.top + p.box.height + 4);
    ctx.fillText(`${p.label} · time (ET)`, p.box.left + p.box.width / 2, p.box.top + p.box.height + 18);
    ctx.fillStyle = COLORS[p.label] ?? '#d8dce6';
    ctx.textBaseline = 'bottom';
    ctx.textAlign = 'left';
    ctx.fillText(p.label, p.box.left + 4, p.box.top - 2);
    ctx.strokeStyle = COLORS[p.label] ?? '#d8dce6';
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    p.points.forEach(([x, y], i) => {
      if (i === 0) ctx.moveTo(x, y);
      else {
        ctx.lineTo(x, p.points[i - 1]![1]); // step: pnl holds until the next exit
        ctx.lineTo(x, y);
      }
    });
    ctx.stroke();
    ctx.lineWidth = 1;
  }
}
