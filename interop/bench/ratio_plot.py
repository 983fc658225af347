# SPDX-License-Identifier: LGPL-2.1-or-later
"""The gnuplot ratio plot that both benchmark reports draw: B/A medians with min-max bars."""

import os
import subprocess
import tempfile

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]


def draw(png, title, ylabel, series, lo, hi, extra_cmds=(), size="1400,600", point_size=0.8):
    """Draw SERIES, a list of (name, [(x, ratio, lo, hi), ...]), to PNG with gnuplot.

    The y axis is log 2 over [lo, hi] with a line at 1 (parity) and a dashed one at 0.98 (the
    floor every target uses); EXTRA_CMDS add the caller's axes, labels and marks.
    """
    with tempfile.TemporaryDirectory() as td:
        dat = os.path.join(td, "ratio.dat")
        with open(dat, "w") as f:
            for name, points in series:
                f.write(f"# {name}\n")
                for x, ratio, p_lo, p_hi in points:
                    f.write(f"{x} {ratio:.4f} {p_lo:.4f} {p_hi:.4f}\n")
                f.write("\n\n")
        cmds = [
            f'set terminal pngcairo size {size} font "sans,10"',
            f'set output "{png}"',
            f'set title "{title}"',
            f'set ylabel "{ylabel}"',
            "set logscale y 2",
            f"set yrange [{lo * 0.9:.3f}:{hi * 1.1:.3f}]",
            "set key outside top center horizontal",
            "set grid ytics",
            'set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb "black" lw 1.5',
            'set arrow from graph 0, first 0.98 to graph 1, first 0.98 nohead dt 2 lc rgb "red"',
            *extra_cmds,
        ]
        parts = [f'"{dat}" index {k} using 1:2:3:4 with yerrorbars pt 7 ps {point_size} '
                 f'lc rgb "{COLOURS[k % len(COLOURS)]}" title "{name}"'
                 for k, (name, _) in enumerate(series)]
        cmds.append("plot " + ", ".join(parts))
        script = os.path.join(td, "plot.gp")
        with open(script, "w") as f:
            f.write("\n".join(cmds) + "\n")
        subprocess.run(["gnuplot", script], check=True)
    return True
