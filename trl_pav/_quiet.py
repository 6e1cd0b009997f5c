"""Import-time quiet: `import trl_pav` prints nothing (imported first by the package)."""

import logging


def _drop_optional_kernel_notice(record: logging.LogRecord) -> bool:
    # bitsandbytes (imported by peft, which transformers' Trainer imports) warns at import time, on CPUs with
    # AVX512-BF16, that the optional `kernels` package is missing; its 4-bit CPU matmuls then use its own code. The
    # notice concerns an accelerated path trl_pav never needs, so this drops that one message and nothing else.
    return "kernels-community" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_drop_optional_kernel_notice)
