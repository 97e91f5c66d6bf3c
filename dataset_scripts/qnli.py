"""Turn a folder of S3 json data for qnli into a Hub-layout dataset repo (parquet per config + dataset card).

```
python dataset_scripts/qnli.py --source Datasets/qnli --output qnli_s3
python -c "from datasets import load_dataset; print(load_dataset('qnli_s3', 'round_1'))"
```

The builder (`QnliS3Builder`, configs `seed`, `round_<k>`, `all`) is importable from here for direct use.
"""

import sys

from s3_hf.builders import QnliS3Builder
from s3_hf.export import main as export_main

TASK = "qnli"
__all__ = ["QnliS3Builder", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return export_main(["--task", TASK, *argv])


if __name__ == "__main__":
    sys.exit(main())
