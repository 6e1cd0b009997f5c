r"""Stage 3: train a process advantage verifier on the step labels.

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
        recipes/train_pav.py --config recipes/configs/arithmetic/train_pav.yaml

Arguments: `trl_pav.scripts.train_verifier` (TRL-style: YAML keys, CLI overrides, `env:` blocks, `--use_peft`,
`--load_in_4bit`). The same code runs as `trl-pav train-pav`.
"""

import json

from trl_pav.scripts import train_verifier
from trl_pav.scripts.common import run_recipe

if __name__ == "__main__":
    result = run_recipe(train_verifier)
    if result is not None:
        print(json.dumps(result))
