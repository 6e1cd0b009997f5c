r"""Stage 3: train a process advantage verifier on the step labels.

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
        recipes/train_pav.py --config recipes/configs/arithmetic/train_pav.yaml

Arguments: `trl_pav.scripts.train_verifier` (TRL-style: YAML keys, CLI overrides, `env:` blocks, `--use_peft`,
`--load_in_4bit`). The same code runs as `trl-pav train-pav`.
"""

import json

from accelerate import PartialState

from trl_pav.scripts.common import end_processes
from trl_pav.scripts.train_verifier import main, make_parser

if __name__ == "__main__":
    result = main(*make_parser().parse_args_and_config())
    if PartialState().is_main_process:
        print(json.dumps(result))
    end_processes()
