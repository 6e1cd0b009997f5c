r"""Stage 3b: train the outcome reward model baseline on the same labels (final outcome only).

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
        recipes/train_orm.py --config recipes/configs/arithmetic/train_orm.yaml

Arguments: `trl_pav.scripts.train_verifier` (TRL-style: YAML keys, CLI overrides, `env:` blocks, `--use_peft`,
`--load_in_4bit`). The same code runs as `trl-pav train-orm`.
"""

import json

from accelerate import PartialState

from trl_pav.scripts.common import end_processes
from trl_pav.scripts.train_verifier import main, make_parser

if __name__ == "__main__":
    result = main(*make_parser().parse_args_and_config(), kind="orm")
    if PartialState().is_main_process:
        print(json.dumps(result))
    end_processes()
