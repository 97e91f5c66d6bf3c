"""Turn a folder of S3 json data for imdb into a Hub-layout dataset repo (parquet per config + dataset card).

```
python dataset_scripts/imdb.py --source Datasets/imdb --output imdb_s3
python -c "from datasets import load_dataset; print(load_dataset('imdb_s3', 'round_1'))"
```

The builder (`ImdbS3Builder`, configs `seed`, `round_<k>`, `all`) is importable from here for direct use.
"""

import sys

from s3_hf.builders import ImdbS3Builder
from s3_hf.export import main as export_main

TASK = "imdb"
__all__ = ["ImdbS3Builder", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return export_main(["--task", TASK, *argv])


if __name__ == "__main__":
    sys.exit(main())
