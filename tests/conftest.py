"""Shared test setup.

The unit tests run tiny models, where extra threads cost more than they bring and, on a busy
2-core machine, oversubscription slows a 50 ms UNet call to seconds. One thread by default;
STYO_TEST_THREADS overrides it.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("STYO_TEST_THREADS", "1")))
