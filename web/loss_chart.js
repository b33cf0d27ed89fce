/*
 * loss_chart.js: the Train panel's live loss chart on a <canvas>: the training loss of every step as a thin
 * line with its moving average over it (the loss of single steps is noisy: batches differ in length),
 * validation losses as dots, a dashed line where one phase (pretrain) hands over to the next (chat).
 *
 *     const chart = new Pychat.LossChart(document.getElementById("train-chart"));
 *     chart.draw({losses: [[step, loss], ...], validations: [[step, loss], ...], phaseStarts: [[step, name]],
 *                 totalSteps: 500});
 *
 * It holds no data of its own: whoever owns the run's records hands them over on each draw.
 */
(function (Pychat) {
  "use strict";

  const AVERAGE_STEPS = 10;  // the moving average's window

  /* [[step, mean of the losses of the last AVERAGE_STEPS steps], ...] */
  function movingAverage(losses) {
    let sum = 0;
    return losses.map(([step, loss], i) => {
      sum += loss - (i >= AVERAGE_STEPS ? losses[i - AVERAGE_STEPS][1] : 0);
      return [step, sum / Math.min(i + 1, AVERAGE_STEPS)];
    });
  }

  class LossChart {
    constructor(canvas) {
      this.canvas = canvas;
    }

    /* The chart's colours, from styles.css (--chart-raw, --chart-train, ...): they follow light and dark mode. */
    get colors() {
      const style = getComputedStyle(this.canvas);
      const color = (name) => style.getPropertyValue("--chart-" + name).trim();
      return {raw: color("raw"), train: color("train"), validation: color("validation"), axis: color("axis"),
              grid: color("grid")};
    }

    /* The canvas at the size it is shown, in device pixels; returns the 2D context scaled to CSS pixels. */
    context() {
      const ratio = self.devicePixelRatio || 1;
      const width = this.canvas.clientWidth || this.canvas.width;
      const height = this.canvas.clientHeight || this.canvas.height;
      if (this.canvas.width !== Math.round(width * ratio)) this.canvas.width = Math.round(width * ratio);
      if (this.canvas.height !== Math.round(height * ratio)) this.canvas.height = Math.round(height * ratio);
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      return {ctx, width, height};
    }

    draw({losses, validations, phaseStarts, totalSteps}) {
      const {ctx, width, height} = this.context();
      ctx.clearRect(0, 0, width, height);
      const box = {left: 34, right: width - 8, top: 8, bottom: height - 18};
      const values = losses.map(([, loss]) => loss).concat(validations.map(([, loss]) => loss));
      const top = values.length ? Math.max(...values) * 1.05 : 1;
      const x = (step) => box.left + (box.right - box.left) * step / Math.max(1, totalSteps);
      const y = (loss) => box.bottom - (box.bottom - box.top) * Math.min(loss, top) / top;
      this.axes(ctx, box, top, totalSteps, y);
      ctx.setLineDash([4, 3]);
      ctx.strokeStyle = this.colors.axis;
      for (const [step, name] of phaseStarts.filter(([step]) => step > 0)) {
        ctx.beginPath();
        ctx.moveTo(x(step), box.top);
        ctx.lineTo(x(step), box.bottom);
        ctx.stroke();
        ctx.fillText(name, x(step) + 3, box.top + 9);
      }
      ctx.setLineDash([]);
      const line = (points, color, width) => {
        ctx.strokeStyle = color;
        ctx.lineWidth = width;
        ctx.beginPath();
        points.forEach(([step, loss], i) => (i ? ctx.lineTo(x(step), y(loss)) : ctx.moveTo(x(step), y(loss))));
        ctx.stroke();
      };
      line(losses, this.colors.raw, 1);
      line(movingAverage(losses), this.colors.train, 1.6);
      ctx.fillStyle = this.colors.validation;
      for (const [step, loss] of validations) {
        ctx.beginPath();
        ctx.arc(x(step), y(loss), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
      this.legend(ctx, box);
    }

    axes(ctx, box, top, totalSteps, y) {
      ctx.font = "10px system-ui, sans-serif";
      ctx.lineWidth = 1;
      ctx.fillStyle = this.colors.axis;
      ctx.textAlign = "right";
      for (const fraction of [0, 0.5, 1]) {
        const loss = top * fraction;
        ctx.strokeStyle = this.colors.grid;
        ctx.beginPath();
        ctx.moveTo(box.left, y(loss));
        ctx.lineTo(box.right, y(loss));
        ctx.stroke();
        ctx.fillText(loss.toFixed(loss < 10 ? 1 : 0), box.left - 4, y(loss) + 3);
      }
      ctx.textAlign = "left";
      ctx.fillText("0", box.left, box.bottom + 12);
      ctx.textAlign = "right";
      ctx.fillText(`step ${totalSteps}`, box.right, box.bottom + 12);
      ctx.textAlign = "left";
    }

    legend(ctx, box) {
      const entries = [["train loss", this.colors.train], ["validation", this.colors.validation]];
      const width = entries.reduce((sum, [label]) => sum + 18 + ctx.measureText(label).width, 0);
      let left = box.right - width;
      for (const [label, color] of entries) {
        ctx.fillStyle = color;
        ctx.fillRect(left, box.top + 2, 10, 3);
        ctx.fillStyle = this.colors.axis;
        ctx.fillText(label, left + 13, box.top + 7);
        left += 18 + ctx.measureText(label).width;
      }
    }
  }

  Object.assign(Pychat, {LossChart});
})(self.Pychat = self.Pychat || {});
