"""Install size, import time and cold first prediction of an environment with robustfer.

    python benchmarks/install_footprint.py [--python ENV/bin/python] [--repeats 5]

For the given interpreter (default: this one) it reports the size of its site-packages folder,
the packages in it, the wall time of ``from robustfer import Recognizer`` in a fresh process,
and of a cold first prediction (fresh process: import, ``Recognizer.from_pretrained("default")``,
``predict`` on the bundled astronaut photo), medians over ``--repeats`` runs, and which
classifier backend ran. Compare a plain install (``pip install .``) with a full one
(``pip install ".[test]"``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "astronaut.jpg"


def timed(python: str, code: str) -> tuple[float, str]:
    wrapper = ("import time; t0 = time.perf_counter()\n" + code +
               "\nprint('__T__', time.perf_counter() - t0)")
    r = subprocess.run([python, "-c", wrapper], capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise SystemExit(r.stderr)
    lines = r.stdout.strip().splitlines()
    t = float(next(line for line in lines if line.startswith("__T__")).split()[1])
    return t, "\n".join(line for line in lines if not line.startswith("__T__"))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    site = Path(subprocess.run([a.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    imp = [timed(a.python, "from robustfer import Recognizer")[0] for _ in range(a.repeats)]
    pred_code = (f"from robustfer import Recognizer\nrec = Recognizer.from_pretrained('default')\n"
                 f"faces = rec.predict({str(SAMPLE)!r})\nprint(type(rec.classifier).__name__, faces[0].expression)")
    runs = [timed(a.python, pred_code) for _ in range(a.repeats)]
    out = {
        "python": a.python,
        "site_packages_mb": round(du(site) / 2**20),
        "has_torch": (site / "torch").is_dir(),
        "import_s": round(statistics.median(imp), 3),
        "cold_first_prediction_s": round(statistics.median(t for t, _ in runs), 3),
        "backend_and_answer": runs[0][1],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
