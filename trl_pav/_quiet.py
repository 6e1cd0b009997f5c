"""Import-time quiet: `import trl_pav` prints nothing (imported first by the package)."""

import logging

# bitsandbytes (imported by peft, which transformers' Trainer imports) tries, at import time on CPUs with
# AVX512-BF16, to fetch an optional 4-bit CPU matmul kernel from the Hub through the `kernels` package; offline or
# without that package it logs why and falls back to its own code. Both notices concern an accelerated path trl_pav
# never needs. The filters drop messages naming that kernel's source and nothing else; they sit on the loggers
# that emit them (a logger's filter does not see records its children propagate).
_BNB_KERNEL_SOURCE = "kernels-community"  # the Hub organisation of bitsandbytes' optional CPU kernel
_NOTICE_LOGGERS = (
    "bitsandbytes.backends.cpu.ops",  # "Failed to load CPU gemm_4bit_forward from kernels-community ..."
    "kernels._internals.hf_hub",  # kernels >= 0.19: "Skipping publisher trust check for '...' ... offline mode."
    "kernels",
)


def _drop_optional_kernel_notice(record: logging.LogRecord) -> bool:
    return _BNB_KERNEL_SOURCE not in record.getMessage()


for _name in _NOTICE_LOGGERS:
    logging.getLogger(_name).addFilter(_drop_optional_kernel_notice)
