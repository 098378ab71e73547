"""Command-line entry points, installed as console scripts and runnable as modules, so that
`accelerate launch -m larvseg_hf.cli.train` works from an installed wheel as well as a checkout:

- `larvseg-train` (`larvseg_hf.cli.train`)
- `larvseg-evaluate` (`larvseg_hf.cli.evaluate`)
- `larvseg-demo` (`larvseg_hf.cli.demo`)
"""
