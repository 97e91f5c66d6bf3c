"""The ``s3-hf`` console script: one entry, a subcommand per job.

```
s3-hf export --task rte --source DIR --output OUT     # S3 json folder -> Hub-layout dataset folder
s3-hf run --task imdb --rounds 2 [--config cfg.yaml]  # the S3 loop
s3-hf assets verify                                   # check the offline model/data packages
```
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> module whose ``main(argv) -> int`` runs it
COMMANDS = {
    "export": "s3_hf.export",
    "run": "s3_hf.pipeline",
    "assets": "s3_hf.assets",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}; choose from {sorted(COMMANDS)}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
