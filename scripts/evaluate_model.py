#!/usr/bin/env python
"""Evaluate LarvSeg: `python scripts/evaluate.py --model DIR [ARGS]` (the same as `larvseg-evaluate`).

The implementation is `larvseg_hf.cli.evaluate`.
"""

from larvseg_hf.cli.evaluate import main

if __name__ == "__main__":
    main()
