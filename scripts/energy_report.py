"""Regenerate the numbers and the figure of docs/energy.md.

    python scripts/energy_report.py                 # every table, and docs/energy-vgg-lite.png
    python scripts/energy_report.py claims layers   # only these sections

Sections: accounting, claims, events, mvms, layers, sensitivity, plot.  Every figure is VGG-lite
at batch 128 with the Table II / T4 preset; every TOPS/W figure counts operations = 2 x MACs
(``imcsim.energy.TOPS_CONVENTION``), on the IMC and the GPU side alike.
"""
from __future__ import annotations

import sys
from pathlib import Path

from imcsim.energy import (
    COSTED_EVENTS,
    TOPS_CONVENTION,
    energy_report,
    plot_report,
    scenario_summary,
    tops_per_watt,
)

ROOT = Path(__file__).resolve().parent.parent
BATCH = 128

#: The accounting choices that change the figures: (column label, energy_report flags,
#: the imcsim energy flags that select them).
ACCOUNTINGS = (
    ("A: masked rows free, L1 backward not run (default)", {}, ""),
    ("B: masked rows free, L1 backward charged", {"first_layer_backward": True},
     "--first-layer-backward"),
    ("C: masked rows charged, L1 backward not run", {"charge_masked_rows": True},
     "--charge-masked-rows"),
    ("D: masked rows charged, L1 backward charged",
     {"charge_masked_rows": True, "first_layer_backward": True},
     "--charge-masked-rows --first-layer-backward"),
)


def _figures(**kw) -> dict:
    """Every headline figure of ``energy_report("vgg-lite", 128, **kw)`` and its scenarios."""
    s = {d["label"]: d for d in scenario_summary("vgg-lite", BATCH, **kw)}
    c = energy_report("vgg-lite", BATCH, **kw).comparison
    all3 = s["IMC all three (variable Vref)"]
    fb, fo = s["IMC forward+backward (dual Vref)"], s["IMC forward (dual Vref)"]
    return {
        "gpu_j": s["GPU only"]["step_j"],
        "step_mj": all3["step_j"] * 1e3,
        "imc_part_mj": all3["imc_part_j"] * 1e3,
        "ratio": all3["ratio"],
        "ratio_l2_l8": all3["ratio_without_first_last"],
        "fb": fb["ratio"],
        "fb_over_fo": fb["ratio"] / fo["ratio"],
        "fo": fo["ratio"],
        "edge_macs_pct": c["first_last_mac_fraction"] * 100,
        "penalty": c["first_last_penalty"],
        "all_on_imc_mj": s["IMC all three, first+last on IMC too"]["step_j"] * 1e3,
        "tops": c["imc_tops_per_watt"],
    }


#: (claim of the paper, key of ``_figures``, text of a figure, test of the claim or None when
#: the claim is a point value: then the ratio to it is shown).
CLAIMS = [
    ("GPU: joules per step (Fig. 9)", "gpu_j", "{:.3f} J", lambda v: 1 <= v < 10),
    ("all three MVMs of L2-L8 on IMC: < 100 mJ per step (Fig. 9)", "step_mj", "{:.1f} mJ",
     lambda v: v < 100),
    ("same, L1 and L9 on the GPU: > 100x, two orders of magnitude (Fig. 10a)", "ratio",
     "{:.0f}x", lambda v: v > 100),
    ("same, layers 2-8 only: > 400x (abstract; Fig. 10b)", "ratio_l2_l8", "{:.0f}x",
     lambda v: v > 400),
    ("forward + backward on IMC (dual Vref): 3x", "fb", "{:.2f}x", 3.0),
    ("... 2x the saving of forward only", "fb_over_fo", "{:.2f}x", 2.0),
    ("first + last layers: < 1 % of the MACs", "edge_macs_pct", "{:.2f} %", lambda v: v < 1),
    ("keeping them on the GPU: about / over 5x more energy (Fig. 10)", "penalty", "{:.1f}x",
     5.0),
    ('Table IV: "54.2 MAC TOPS/W"', "tops", "{:.1f} TOPS/W", 54.2),
]


def accounting() -> None:
    """One row per accounting choice: the headline figures and the command."""
    print("| accounting | GPU step | step | IMC part | GPU/step | GPU/IMC, L2-L8 | first/last "
          "penalty | all on IMC | IMC TOPS/W | command |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, kw, flags in ACCOUNTINGS:
        f = _figures(**kw)
        cmd = " ".join(["imcsim energy --model vgg-lite --batch 128 --scenarios", flags]).strip()
        print(f"| {label} | {f['gpu_j']:.4f} J | {f['step_mj']:.2f} mJ | "
              f"{f['imc_part_mj']:.3f} mJ | {f['ratio']:.0f}x | {f['ratio_l2_l8']:.0f}x | "
              f"{f['penalty']:.2f}x | {f['all_on_imc_mj']:.2f} mJ | {f['tops']:.1f} | "
              f"`{cmd}` |")


def claims() -> None:
    """Each claim against each accounting: the figure, and whether the claim holds."""
    figs = [_figures(**kw) for _, kw, _ in ACCOUNTINGS]
    print("| claim (paper) | " + " | ".join(label.split(":")[0] for label, _, _ in ACCOUNTINGS)
          + " |")
    print("|---|" + "---|" * len(ACCOUNTINGS))
    for claim, key, fmt, test in CLAIMS:
        cells = []
        for f in figs:
            text = fmt.format(f[key])
            if callable(test):
                text += " (holds)" if test(f[key]) else " (fails)"
            else:
                text += f" ({f[key] / test:.2f} of it)"
            cells.append(text)
        print(f"| {claim} | " + " | ".join(cells) + " |")


def events() -> None:
    """The IMC part of accounting A by event."""
    rep = energy_report("vgg-lite", BATCH)
    part = rep.comparison["imc_part_j"]
    print("IMC part (all three MVMs of L2-L8, accounting A) by event:")
    for e in COSTED_EVENTS:
        print(f"  {e:<16} {rep.totals['e_' + e] * 1e3:8.4f} mJ "
              f"({rep.totals['e_' + e] / part * 100:5.1f} %)")


def mvms() -> None:
    """The IMC part of accounting A by MVM kind, with its TOPS/W."""
    rep = energy_report("vgg-lite", BATCH)
    print("IMC part by MVM kind (accounting A):")
    for k in ("forward", "backward", "update"):
        rows = [r for r in rep.rows if r["mvm"] == k and r["device"] == "imc"]
        e = sum(r["energy_j"] for r in rows)
        m = sum(r["macs"] for r in rows)
        bc = sum(r["bitcell_mults"] for r in rows)
        print(f"  {k:<9} {e * 1e3:.4f} mJ  {tops_per_watt(m, e):.1f} TOPS/W  "
              f"{bc / m:.1f} bit-cell multiplications per MAC")


def layers() -> None:
    """Per layer and MVM: the IMC energy (accounting A's densities) against the GPU's."""
    rep = energy_report("vgg-lite", BATCH, first_layer_backward=True)
    print("| layer | forward | backward | update | GPU, per MVM |")
    print("|---|---|---|---|---|")
    specs = {s["name"]: s for s in rep.settings["layers"]}
    for name in specs:
        r = {x["mvm"]: x for x in rep.rows if x["layer"] == name}
        s = specs[name]
        kind = f"{s['kind']} {s['in_channels']}->{s['out_channels']}"
        bwd = f"{r['backward']['imc_energy_j'] * 1e6:.1f}"
        print(f"| {name} ({kind}) | {r['forward']['imc_energy_j'] * 1e6:.1f} | "
              f"{bwd if name != 'L1' else '(' + bwd + ', not run)'} | "
              f"{r['update']['imc_energy_j'] * 1e6:.1f} | "
              f"{r['forward']['gpu_energy_j'] * 1e3:.2f} mJ |")


def sensitivity() -> None:
    """Accounting A under other assumed gradient densities."""
    print("| gradient density | max-pool 1/4 | IMC part (mJ) | step (mJ) | GPU/step | "
          "GPU/IMC, L2-L8 | first/last penalty | IMC TOPS/W |")
    print("|---|---|---|---|---|---|---|---|")
    for d in (0.1, 0.25, 0.5, 1.0):
        for pool in (True, False):
            r = energy_report("vgg-lite", BATCH, gradient_density=d,
                              pool_sparsity=pool).comparison
            print(f"| {d} | {'yes' if pool else 'no'} | {r['imc_part_j'] * 1e3:.3f} | "
                  f"{r['imc_step_j'] * 1e3:.2f} | {r['ratio']:.0f}x | "
                  f"{r['ratio_without_first_last']:.0f}x | {r['first_last_penalty']:.2f}x | "
                  f"{r['imc_tops_per_watt']:.1f} |")


def plot() -> None:
    """docs/energy-vgg-lite.png of accounting A."""
    png = plot_report(energy_report("vgg-lite", BATCH), ROOT / "docs" / "energy-vgg-lite.png")
    print(f"wrote {png.relative_to(ROOT)}")


SECTIONS = {"accounting": accounting, "claims": claims, "events": events, "mvms": mvms,
            "layers": layers, "sensitivity": sensitivity, "plot": plot}


def main(argv: list[str]) -> int:
    """Print the chosen sections (default: all, and write the figure)."""
    unknown = [a for a in argv if a not in SECTIONS]
    if unknown:
        print(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    for name in argv or SECTIONS:
        print(f"## {name}")
        SECTIONS[name]()
        print()
    print(TOPS_CONVENTION)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
