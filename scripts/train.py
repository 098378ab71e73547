#!/usr/bin/env python
"""Train LarvSeg: `accelerate launch scripts/train.py [ARGS]` (the same as `larvseg-train [ARGS]`).

The implementation is `larvseg_hf.cli.train`, so an installed wheel trains exactly as a checkout does.
"""

from larvseg_hf.cli.train import main

if __name__ == "__main__":
    main()
