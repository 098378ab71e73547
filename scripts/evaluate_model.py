#!/usr/bin/env python
"""Evaluate LarvSeg: `python scripts/evaluate_model.py --model DIR [ARGS]` (the same as `larvseg-evaluate`).

The implementation is `larvseg_hf.cli.evaluate`. Not named evaluate.py: a script's folder comes first on
sys.path, and that name would shadow the `evaluate` package for every script here.
"""

from larvseg_hf.cli.evaluate import main

if __name__ == "__main__":
    main()
