# Written out and run by lameduck-bench: requests per second and failed requests over time
# across a shutdown (part 1), one panel per side: lameduck, plain axum, axum + the same delay.
#
# python3 plot.py OUT.png SIGTERM_S WINDOW_S SIDE.csv "SIDE TITLE" [SIDE.csv "SIDE TITLE" ...]
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FAILURES = [
    ("refused", "refused connection", "#d62728"),
    ("no_response", "written, no complete response", "#ff7f0e"),
    ("status_5xx", "5xx", "#9467bd"),
    ("timeout", "timeout", "#8c564b"),
]


def load(path):
    with open(path, newline="") as f:
        return [{k: int(v) for k, v in row.items()} for row in csv.DictReader(f)]


def main():
    out, sigterm, window = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    panels = list(zip(sys.argv[4::2], sys.argv[5::2]))
    data = [(load(path), title) for path, title in panels]
    xmax = max(len(rows) for rows, _ in data)
    fig, axes = plt.subplots(1, len(data), figsize=(6.5 * len(data), 4.8), sharey=True,
                             squeeze=False)
    axes = axes[0]
    for ax, (rows, title) in zip(axes, data):
        x = [r["second"] for r in rows]
        ok = [r["ok"] for r in rows]
        bottom = [0] * len(rows)
        failed = 0
        for key, label, color in FAILURES:
            values = [r[key] for r in rows]
            failed += sum(values)
            ax.bar(x, values, width=1.0, align="edge", bottom=bottom, color=color,
                   label=f"failed: {label}", edgecolor="white", linewidth=0.5)
            bottom = [b + v for b, v in zip(bottom, values)]
        # ok as a step line over each 1 s bucket
        ax.step(x + [x[-1] + 1] if x else [], ok + [ok[-1]] if ok else [], where="post",
                color="#2ca02c", linewidth=2.2, label="ok (complete response < 500)")
        ax.axvspan(sigterm, sigterm + window, color="#1f77b4", alpha=0.08,
                   label=f"propagation window ({window:g} s)")
        ax.axvline(sigterm, color="black", linestyle="--", linewidth=1.2, label="SIGTERM")
        unanswered = sum(r["no_response"] for r in rows)
        ax.set_title(f"{title}\n{failed:,} failed requests ({unanswered:,} written, never answered)",
                     fontsize=10)
        ax.set_xlabel("seconds since the load started (1 s buckets, by request start)")
        ax.set_xlim(0, max(xmax, sigterm + window + 1))
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("requests per second")
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle("Requests across a shutdown: SIGTERM, then traffic keeps arriving while endpoints update",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
