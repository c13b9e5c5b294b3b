"""Regenerate the numbers and the figure of docs/energy.md.

    python scripts/energy_report.py            # prints the tables, writes docs/energy-vgg-lite.png
"""
from __future__ import annotations

from pathlib import Path

from imcsim.energy import COSTED_EVENTS, energy_report, plot_report, scenario_summary

ROOT = Path(__file__).resolve().parent.parent


def _figures(**kw) -> list[str]:
    """The figures of the claims in ``CLAIMS``, as text, for ``energy_report(**kw)``."""
    s = {d["label"]: d for d in scenario_summary("vgg-lite", 128, **kw)}
    c = energy_report("vgg-lite", 128, **kw).comparison
    all3 = s["IMC all three (variable Vref)"]
    fb, fo = s["IMC forward+backward (dual Vref)"], s["IMC forward (dual Vref)"]
    return [
        f"{s['GPU only']['step_j']:.3f} J",
        f"{all3['step_j'] * 1e3:.1f} mJ (IMC part {all3['imc_part_j'] * 1e3:.2f} mJ)",
        f"{all3['ratio']:.0f}x",
        f"{all3['ratio_without_first_last']:.0f}x",
        f"{fb['ratio']:.2f}x",
        f"{fb['ratio'] / fo['ratio']:.2f}x (forward only {fo['ratio']:.2f}x)",
        f"{c['first_last_mac_fraction'] * 100:.2f} %",
        f"{c['first_last_penalty']:.1f}x",
        f"{c['imc_macs_per_joule'] / 1e12:.1f} TMAC/J = {c['imc_tops_per_watt']:.1f} TOPS/W",
    ]


CLAIMS = [
    "GPU: joules per step (Fig. 9)",
    "all three MVMs of L2-L8 on IMC: < 100 mJ per step (Fig. 9)",
    "same, L1 and L9 on the GPU: > 100x (Fig. 10a), two orders of magnitude",
    "same, layers 2-8 only: > 400x (abstract; Fig. 10b)",
    "forward + backward on IMC (dual Vref): 3x",
    "... 2x the saving of forward only",
    "first + last layers: < 1 % of the MACs",
    "keeping them on the GPU: > 5x more energy (Fig. 10)",
    "54.2 MAC TOPS/W (Table IV)",
]


def main() -> None:
    """Print the tables of docs/energy.md and write docs/energy-vgg-lite.png."""
    ours = _figures()
    paper_style = _figures(charge_masked_rows=True)
    print("| claim (paper) | ours (masked rows free) | ours, masked rows charged |")
    print("|---|---|---|")
    for claim, a, b in zip(CLAIMS, ours, paper_style):
        print(f"| {claim} | {a} | {b} |")
    rep = energy_report("vgg-lite", 128)
    c = rep.comparison
    print()
    print("IMC energy of L2-L8, all three MVMs, by event:")
    for e in COSTED_EVENTS:
        print(f"  {e:<16} {rep.totals['e_' + e] * 1e3:8.4f} mJ "
              f"({rep.totals['e_' + e] / c['imc_part_j'] * 100:5.1f} %)")
    print()
    print("by MVM kind (IMC part, mJ):")
    for k in ("forward", "backward", "update"):
        e = sum(r["energy_j"] for r in rep.rows if r["mvm"] == k and r["device"] == "imc")
        m = sum(r["macs"] for r in rep.rows if r["mvm"] == k and r["device"] == "imc")
        print(f"  {k:<9} {e * 1e3:.4f} mJ  {m / e / 1e12:.1f} TMAC/J")
    print()
    print("sensitivity to the gradient-density assumption (all three on IMC):")
    print("| gradient density | max-pool 1/4 | IMC part (mJ) | step (mJ) | ratio | L2-8 ratio | "
          "penalty | TMAC/J |")
    print("|---|---|---|---|---|---|---|---|")
    for d in (0.1, 0.25, 0.5, 1.0):
        for pool in (True, False):
            r = energy_report("vgg-lite", 128, gradient_density=d, pool_sparsity=pool).comparison
            print(f"| {d} | {'yes' if pool else 'no'} | {r['imc_part_j'] * 1e3:.3f} | "
                  f"{r['imc_step_j'] * 1e3:.2f} | {r['ratio']:.0f}x | "
                  f"{r['ratio_without_first_last']:.0f}x | {r['first_last_penalty']:.2f}x | "
                  f"{r['imc_macs_per_joule'] / 1e12:.1f} |")
    png = plot_report(rep, ROOT / "docs" / "energy-vgg-lite.png")
    print(f"\nwrote {png.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
