r"""Stage 3b: train the outcome reward model baseline on the same labels (final outcome only).

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
        recipes/train_orm.py --config recipes/configs/arithmetic/train_orm.yaml

Arguments: `trl_pav.scripts.train_verifier` (TRL-style: YAML keys, CLI overrides, `env:` blocks, `--use_peft`,
`--load_in_4bit`). The same code runs as `trl-pav train-orm`.
"""

import json

from trl_pav.scripts import train_verifier
from trl_pav.scripts.common import run_recipe

if __name__ == "__main__":
    result = run_recipe(train_verifier, kind="orm")
    if result is not None:
        print(json.dumps(result))
