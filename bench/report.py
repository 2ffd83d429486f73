"""The benchmark report: ``report.json`` (everything), ``report.md`` (for people), ``latency.png``.

``bench.harness`` collects a plain dict while it runs and hands it to ``write`` at the end —
also after an error, so a failed run still leaves a record saying how far it got. The
Markdown names the machine, the process placement, the simulator mode of every figure, the
exact command, and explains each figure where it is shown; it is meant to be archived as the
stress-test record (the retention rules ask for test records to be kept).
"""

from __future__ import annotations

import base64
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

TARGET_THROUGHPUT_RATIO = 0.8
TARGET_ADDED_RATIO = 1.25
TARGET_KILL_MS = 50.0
TARGET_FIX_CPU_RATIO = 2.0  # the FIX front: CPU per order at most twice the native front's


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = 0.0
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for mod, dist in (("uvloop", "uvloop"), ("msgspec", "msgspec"), ("hdrh", "hdrhistogram")):
        try:
            versions[mod] = version(dist)
        except PackageNotFoundError:
            versions[mod] = "?"
    virt = ""
    try:
        virt = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "gateway", "checks", "cext", "simulator"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        commit += " (+ uncommitted changes in gateway/checks/cext/simulator)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {"commit": commit, "cpu": model, "cores": os.cpu_count(), "usable_cores": sorted(os.sched_getaffinity(0)),
            "memory_gib": mem_gib, "kernel": platform.release(), "virtualization": virt,
            "python": sys.version.split()[0], "versions": versions}


def ramp_summary(steps: list[dict[str, Any]], peak: float) -> dict[str, Any]:
    held = [s["rate"] for s in steps if s["ok"]]
    capacity = max(held) if held else 0.0
    first_fail = next((s for s in sorted(steps, key=lambda s: s["rate"]) if not s["ok"]), None)
    return {
        "peak": peak,
        "capacity": capacity,
        "multiple": round(capacity / peak, 2) if peak else None,
        "broke_at": first_fail["rate"] if first_fail else None,
        "broke_because": first_fail["why"] if first_fail else "never broke within the steps",
        "steps": [{"rate": s["rate"], "ok": s["ok"], "why": s["why"],
                   "throughput": s["result"].throughput, "latency_us": s["result"].latency_us,
                   "rejected": s["result"].rejected, "lost": s["result"].lost,
                   "lag_us": s["result"].lag_us, "cpu_pct": s["cpu_pct"],
                   "disk": s.get("disk", {}),
                   "histogram": s["result"].histogram} for s in steps],
    }


# ------------------------------------------------------------------------------- writing
def write(run_dir: Path, data: dict[str, Any]) -> list[Path]:
    paths = [run_dir / "report.json"]
    paths[0].write_bytes(msgspec.json.format(msgspec.json.encode(data), indent=1))
    png = run_dir / "latency.png"
    try:
        if plot(data, png):
            paths.append(png)
    except ImportError:
        data.setdefault("notes", []).append("matplotlib is not installed: no plot")
    md = run_dir / "report.md"
    md.write_text(markdown(data, png.name if png in paths else None))
    paths.append(md)
    return paths


def _hist(*encoded: str):  # noqa: ANN202 - hdrh type
    """One histogram from one or several encoded ones (repeats are pooled)."""
    from hdrh.histogram import HdrHistogram

    pooled = None
    for e in encoded:
        if not e:
            continue
        h = HdrHistogram.decode(base64.b64decode(e))
        if pooled is None:
            pooled = h
        else:
            pooled.add(h)
    return pooled


def plot(data: dict[str, Any], png: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compare = data.get("compare")
    ramp = data.get("ramp")
    if not compare and not ramp:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    if compare:
        trial = _best_trial(compare)
        pcts = [50, 90, 99, 99.9, 99.99, 100]
        xs = [1 / (1 - p / 100) if p < 100 else 1e5 for p in pcts]
        for path, summ in trial["summary"]["fixed"].items():
            h = _hist(*summ.get("histograms", [summ.get("histogram", "")]))
            if h is None:
                continue
            ys = [h.get_value_at_percentile(p) for p in pcts]
            ax.plot(xs, ys, marker="o", label=f"{path} (pooled p50 {ys[0]:,.0f} µs)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs, [f"p{p:g}" if p < 100 else "max" for p in pcts])
        ax.set_ylabel("order -> ack latency (µs)")
        rate = data["args"]["rate"]
        ax.set_title(f"latency by percentile at {rate:,.0f} orders/s, repeats pooled\n"
                     f"({trial['describe']})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[1]
    if ramp and ramp["steps"]:
        steps = sorted(ramp["steps"], key=lambda s: s["rate"])
        rates = [s["rate"] for s in steps]
        for q, style in (("p50", "o-"), ("p99", "s-"), ("p99.9", "^-")):
            ax.plot(rates, [s["latency_us"][q] / 1000 for s in steps], style, label=q)
        ax.axhline(data["args"]["p99_limit_ms"], color="red", ls="--", lw=1, label="p99 limit")
        peak = ramp["peak"]
        ax.axvline(peak, color="grey", ls=":", lw=1, label=f"peak {peak:,.0f}/s")
        if ramp["capacity"]:
            ax.axvline(ramp["capacity"], color="green", ls="--", lw=1,
                       label=f"capacity {ramp['capacity']:,.0f}/s ({ramp['multiple']}× peak)")
        for s in steps:
            if not s["ok"]:
                ax.plot([s["rate"]], [s["latency_us"]["p99"] / 1000], "rx", ms=10)
        off = data.get("ramp_nojournal")
        if off and off["steps"]:
            o = sorted(off["steps"], key=lambda s: s["rate"])
            ax.plot([s["rate"] for s in o], [s["latency_us"]["p99"] / 1000 for s in o], "d--",
                    color="purple", label=f"p99, journal off (capacity {off['capacity']:,.0f}/s)")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (orders/s)")
        ax.set_ylabel("order -> ack latency (ms)")
        ax.set_title("capacity ramp through the gateway (journal "
                     f"{'on' if data['journal'] != 'off' else 'off'}"
                     + ("; dashed: journal off)" if off else ")"), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"fengkong end-to-end benchmark, {data['started']}, engine {data['engine']}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def _best_trial(compare: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in compare["trials"] if t["placement"] == compare["best"])


def _f(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "misses"


def _path_table(by_path: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| path | acks/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | CPU % loadgen / proxy / sim / not ours / steal | disk fdatasync max ms | cores (last ran on) |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for path, s in by_path.items():
        lat = s["latency_us"]
        cpu = s["cpu_pct"]
        cores = ", ".join(f"{k} {v}" for k, v in sorted(s["cores"].items()))
        rows.append(f"| {path} | {s['throughput']:,.0f} | {lat['p50']:,.0f} | {lat['p90']:,.0f} | "
                    f"{lat['p99']:,.0f} | {lat['p99.9']:,.0f} | {lat['max']:,.0f} | "
                    f"{cpu.get('loadgen', 0):.0f} / {cpu.get('proxy', 0):.0f} / {cpu.get('sim', 0):.0f} / {cpu.get('other', 0):.0f} / {cpu.get('steal', 0):.0f} | "
                    f"{s.get('disk_fsync_max_ms', 0):.1f} | {cores} |")
    return rows


def markdown(data: dict[str, Any], png: str | None) -> str:
    m = data["machine"]
    a = data["args"]
    out = [f"# fengkong end-to-end benchmark — {data['started']}", ""]
    if data.get("error"):
        out += [f"**The run failed:** {data['error']}", ""]
    out += [
        "## Setup", "",
        f"- machine: {m['cpu']}, {m['cores']} cores (usable {m['usable_cores']}), "
        f"{m['memory_gib']} GiB, kernel {m['kernel']}"
        + (f", virtualised ({m['virtualization']})" if m.get("virtualization") not in ("", "none") else ""),
        f"- Python {m['python']}, uvloop {m['versions']['uvloop']}, msgspec {m['versions']['msgspec']}, "
        f"hdrhistogram {m['versions']['hdrh']}",
        f"- code: commit {m.get('commit', '?')}",
        f"- risk engine: **{data['engine']}**; gateway journal: **{data['journal']}** "
        "(a fresh directory per gateway process, fsync policy from the config)",
        f"- command: `{' '.join(data['argv'])}`",
        f"- config: `{a['gateway_config']}` (risk: `{a['risk_config']}`) — every check on",
    ]
    if "placement" in data:
        out.append(f"- process placement used for the kill, ramp and profile phases: "
                   f"**{data['placement']['describe']}**")
    for phase, mode in data.get("sim_mode", {}).items():
        out.append(f"- simulator mode for *{phase}*: {mode}")
    out.append("")
    compare = data.get("compare")
    if compare:
        out += _compare_md(data, compare)
    if data.get("kill"):
        out += _kill_md(data["kill"])
    if data.get("ramp"):
        out += _ramp_md(data, data["ramp"], "off" if data["journal"] == "off" else "on")
    if data.get("ramp_nojournal"):
        out += _ramp_md(data, data["ramp_nojournal"], "off")
    if data.get("profile"):
        out += _profile_md(data["profile"])
    if data.get("journal_bytes"):
        jb = data["journal_bytes"]
        out += ["## Journal", "",
                f"Gateway processes wrote {len(jb)} journals, {sum(jb) / 2**20:,.1f} MiB in all "
                f"(largest {max(jb) / 2**20:,.1f} MiB): the journal was on.", ""]
    if png:
        out += ["## Plot", "", f"![latency]({png})", ""]
    if data.get("noisy"):
        out += ["## Shared machine", "", "Measurements disturbed by processes that are not ours "
                "(a busy machine at the start, or CPU taken during the window; such a measurement "
                "is redone up to --retries times and the last attempt kept):", ""]
        out += [f"- {n}" for n in data["noisy"]] + [""]
    for note in data.get("notes", []):
        out.append(f"- {note}")
    out += ["", f"Finished {data.get('finished', '?')}.", ""]
    return "\n".join(out)


def _compare_md(data: dict[str, Any], compare: dict[str, Any]) -> list[str]:
    a = data["args"]
    out = ["## Gateway vs bare forwarder vs direct", "",
           f"The same load on each path: {a['sessions']} session(s), the bench flow (BUY OPEN / "
           "SELL CLOSE rotating over 256 accounts and 8 instruments, every order accepted by "
           f"the risk engine), {a['duration']:g} s measured after {a['warmup']:g} s warm-up, "
           f"{a['repeat']} interleaved repeat(s), medians shown. *Fixed rate*: open loop at "
           f"{a['rate']:,.0f} orders/s, orders leaving one by one (100 µs pacing timer). "
           f"*Max*: closed loop, {a['window']} orders in flight per session. Latency is order "
           "-> ack at the client. Added latency = path − direct at the same percentile. "
           f"Forwarder mode: `{a['forwarder_mode']}`.", ""]
    for trial in compare["trials"]:
        best = " (best)" if trial["placement"] == compare["best"] and len(compare["trials"]) > 1 else ""
        out += [f"### Placement `{trial['placement']}`{best}: {trial['describe']}", ""]
        for mode, title in (("fixed", f"fixed rate {a['rate']:,.0f} orders/s"),
                            ("max", "max throughput (closed loop)")):
            if mode not in trial["summary"]:
                continue
            out += [f"**{title}**", ""] + _path_table(trial["summary"][mode]) + [""]
            primary = f"gateway, journal {'off' if a['journal'] == 'off' else 'on'}"
            for label, key in ((primary, "ratios"), ("gateway, journal off", "ratios_nojournal")):
                if key in trial:
                    out += _ratio_lines(trial[key][mode], mode, label)
            if "tls" in trial:
                out += _tls_lines(trial["tls"][mode])
            if "ratios_fix" in trial:
                out += _fix_lines(trial["ratios_fix"][mode], mode)
            errs = [f"{p}: {s['rejected']} rejected, {s['lost']} lost {s['errors'][:1]}"
                    for p, s in trial["summary"][mode].items() if s["rejected"] or s["lost"] or s["errors"]]
            if errs:
                out.append("- problems: " + "; ".join(errs))
            out.append("")
    return out


def _ratio_lines(r: dict[str, Any], mode: str, label: str) -> list[str]:
    out = [f"*{label}:*",
           f"- throughput / forwarder throughput: **{_f(r['throughput_ratio'], '{:.2f}')}**"
           + (f" (target ≥ {TARGET_THROUGHPUT_RATIO}: {_verdict(r['throughput_ratio'], TARGET_THROUGHPUT_RATIO, True)})"
              if mode == "max" else " (both carry the offered rate)"),
           f"- CPU per order in the middle process: {_f(r['gateway_cpu_us_per_order'], '{:.1f}')} µs vs the "
           f"forwarder's {_f(r['forwarder_cpu_us_per_order'], '{:.1f}')} µs -> "
           f"**{_f(r['cpu_cost_ratio'], '{:.1f}')}×** the forwarder's cost per order"]
    for q in ("p50", "p99"):
        out.append(
            f"- added latency {q}: {_f(r[f'gateway_added_{q}_us'])} µs vs the forwarder's "
            f"{_f(r[f'forwarder_added_{q}_us'])} µs -> ratio **{_f(r[f'added_{q}_ratio'], '{:.2f}')}** "
            f"(target ≤ {TARGET_ADDED_RATIO}: {_verdict(r[f'added_{q}_ratio'], TARGET_ADDED_RATIO, False)})")
    return out


def _tls_lines(t: dict[str, Any]) -> list[str]:
    """TLS on vs off (``--tls``): the gateway-tls path against the plain gateway."""
    out = ["*TLS on the client port and the exchange link (gateway-tls) vs off (gateway):*",
           f"- CPU per order in the gateway: {_f(t['tls_cpu_us_per_order'], '{:.1f}')} µs vs "
           f"{_f(t['plain_cpu_us_per_order'], '{:.1f}')} µs -> **{_f(t['tls_cpu_us_extra'], '{:+.1f}')} µs** "
           f"({_f(t['tls_cpu_ratio'], '{:.2f}')}×)",
           f"- throughput with TLS / without: {_f(t['throughput_ratio'], '{:.2f}')}"]
    for q in ("p50", "p99"):
        out.append(f"- added latency {q}: {_f(t[f'tls_added_{q}_us'])} µs with TLS vs "
                   f"{_f(t[f'plain_added_{q}_us'])} µs without -> **{t[f'tls_extra_{q}_us']:+,.0f} µs**")
    return out


def _fix_lines(r: dict[str, Any], mode: str) -> list[str]:
    out = ["*FIX 4.4 front vs native front (gateway-fix vs gateway, same load):*",
           f"- CPU per order in the gateway process: {_f(r['fix_cpu_us_per_order'], '{:.1f}')} µs "
           f"over FIX vs {_f(r['native_cpu_us_per_order'], '{:.1f}')} µs native -> "
           f"**{_f(r['cpu_ratio'], '{:.2f}')}×** (target ≤ {TARGET_FIX_CPU_RATIO}: "
           f"{_verdict(r['cpu_ratio'], TARGET_FIX_CPU_RATIO, False)})"]
    if mode == "max":
        out.append(f"- throughput / native throughput: {_f(r['throughput_ratio'], '{:.2f}')}")
    for q in ("p50", "p99"):
        out.append(f"- added latency {q} over direct: {_f(r[f'fix_added_{q}_us'])} µs over FIX vs "
                   f"{_f(r[f'native_added_{q}_us'])} µs native ({_f(r[f'fix_extra_{q}_us'])} µs more)")
    return out


def _kill_md(k: dict[str, Any]) -> list[str]:
    within = "within" if k["gateway_elapsed_ms"] <= TARGET_KILL_MS else "NOT within"
    return [
        "## Kill switch", "",
        f"{k['orders']:,} resting orders in one account (placed in {k['place_s']:.1f} s), then "
        "`POST /v1/kill {scope: account}` from the client host; times from the command:", "",
        "| step | ms |", "|---|---:|",
        f"| gateway: engine kill + {k['cancels_sent']:,} cancels handed to the exchange link (its `elapsed_us`) | {k['gateway_elapsed_ms']:,.2f} |",
        f"| admin answer back at the client | {k['response_ms']:,.2f} |",
        f"| last of {k['canceled']:,} CANCELED reports read by the client | {k['last_cancel_ack_ms']:,.2f} |",
        f"| reject of the first new order sent after the answer (reason {k['reject_reason']}) | {k['first_reject_ms']:,.2f} |",
        "",
        f"Cancels for {k['orders']:,} orders were sent {within} the {TARGET_KILL_MS:g} ms target; "
        f"orders accepted after the kill: {k['accepted_after_kill']}."
        + (f" Problems: {'; '.join(k['errors'])}" if k["errors"] else ""), "",
    ]


def _ramp_md(data: dict[str, Any], r: dict[str, Any], journal: str) -> list[str]:
    a = data["args"]
    out = [f"## Capacity (stress test), journal {journal}", "",
           f"Open-loop steps through the gateway ({a['ramp_sessions']} sessions, {a['ramp_duration']:g} s each, "
           f"journal {journal}), from {a['ramp_start']:g}× the configured historical peak of "
           f"{r['peak']:,.0f} orders/s, ×{a['ramp_factor']} per step, then {a['ramp_refine']} "
           f"bisection step(s). A step holds when every order is acknowledged, none is rejected, "
           f"≥ 98 % of the offered rate is acknowledged and p99 ≤ {a['p99_limit_ms']:g} ms. The disk "
           "column times a 4 KiB write + fdatasync every 20 ms on the journal's filesystem "
           "meanwhile (a slow disk slows the journal's writes); *steal* is CPU the "
           "hypervisor gave other guests during the window.", "",
           "| offered/s | acks/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU % gateway / sim / loadgen / not ours / steal | disk fdatasync p99 / max ms | held? |",
           "|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for s in sorted(r["steps"], key=lambda s: s["rate"]):
        lat, cpu = s["latency_us"], s["cpu_pct"]
        out.append(f"| {s['rate']:,.0f} | {s['throughput']:,.0f} | {lat['p50']:,.0f} | {lat['p99']:,.0f} | "
                   f"{lat['p99.9']:,.0f} | {lat['max']:,.0f} | {cpu.get('proxy', 0):.0f} / {cpu.get('sim', 0):.0f} / "
                   f"{cpu.get('loadgen', 0):.0f} / {cpu.get('other', 0):.0f} / {cpu.get('steal', 0):.0f} | "
                   f"{s.get('disk', {}).get('p99_ms', 0):.1f} / {s.get('disk', {}).get('max_ms', 0):.1f} | "
                   f"{'yes' if s['ok'] else 'no'}: {s['why']} |")
    mult = r["multiple"]
    verdict = ("meets both the 2× rule and the 3× critical-infrastructure rule" if mult and mult >= 3
               else "meets the 2× rule, not the 3× critical-infrastructure rule" if mult and mult >= 2
               else "misses the 2× rule")
    out += ["", f"**Sustained capacity: {r['capacity']:,.0f} orders/s = {_f(mult, '{:.2f}')}× the "
                f"historical peak of {r['peak']:,.0f}/s** — {verdict}. It broke at "
                f"{_f(r['broke_at'])}/s: {r['broke_because']}.", ""]
    return out


def _profile_md(p: dict[str, Any]) -> list[str]:
    out = ["## Profile of the gateway under max load", "",
           f"Tool: {p.get('tool', '?')}; {p.get('samples', 0):,} samples of the event-loop thread; "
           f"throughput while profiled {p.get('throughput', 0):,.0f} acks/s. Time inside C "
           "extensions (Cython engine, msgspec, uvloop) is charged to the Python line that called "
           "it.", ""]
    if p.get("areas"):
        out += ["| area (innermost project frame) | share |", "|---|---:|"]
        out += [f"| {x['where']} | {x['share']:.1f} % |" for x in p["areas"]]
        out.append("")
    if p.get("self_functions"):
        out += ["| self time by function | share |", "|---|---:|"]
        out += [f"| `{x['where']}` | {x['share']:.1f} % |" for x in p["self_functions"][:15]]
        out.append("")
    out += ["| self time: function (file:line) | share |", "|---|---:|"]
    out += [f"| `{x['where']}` | {x['share']:.1f} % |" for x in p.get("self", [])[:15]]
    out += ["", "| inclusive: function (file) | share |", "|---|---:|"]
    out += [f"| `{x['where']}` | {x['share']:.1f} % |" for x in p.get("inclusive", [])[:15]]
    out.append("")
    return out

