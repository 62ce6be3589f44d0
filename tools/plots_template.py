"""Write an HTML template for ``dvc plots show --html-template`` that works offline.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN, so without internet it shows no
charts. This template holds the three libraries inline instead, bundled by the vl-convert-python
package (a project dependency), with the Vega-Lite v5 line that DVC's plot specs are written
for. ``scripts/plots.sh`` writes it once and passes it to DVC.

    python tools/plots_template.py OUT.html
"""

from __future__ import annotations

import sys
from pathlib import Path

# DVC's templates are Vega-Lite v5 specs (their $schema); the newest v5 line vl-convert bundles
VEGA_LITE_VERSION = "5.21"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>glass: DVC plots</title>
    <script>
__BUNDLE__
    </script>
    <style>
        table { border-spacing: 15px; }
        body { font-family: sans-serif; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def write_template(path: str | Path) -> Path:
    import vl_convert

    # the default snippet puts vegaEmbed, vegaLite and vega on window, as DVC's divs expect
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PAGE.replace("__BUNDLE__", bundle), encoding="utf-8")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(write_template(sys.argv[1]))
