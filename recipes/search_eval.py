r"""Stage 5: accuracy vs compute of PAV beam search (C = 3, Q + alpha*A) and best-of-N baselines.

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
        recipes/search_eval.py --config recipes/configs/arithmetic/search_eval.yaml

Arguments: `trl_pav.scripts.search_eval` (TRL-style: YAML keys, CLI overrides, `env:` blocks, `--use_peft`,
`--load_in_4bit`). The same code runs as `trl-pav search`.
"""

import json

from trl_pav.scripts import search_eval
from trl_pav.scripts.common import run_recipe

if __name__ == "__main__":
    result = run_recipe(search_eval)
    if result is not None:
        print(json.dumps(result))
