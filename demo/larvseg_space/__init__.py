"""The modules of larvseg_hf that demo/app.py runs on, for a Space without the package installed.

Each file here is a link to its larvseg_hf/ original (one copy of the code); copy this folder into a Space
with the links followed (`cp -rL`, or `hf upload`, which reads through them). app.py imports this only
when `import larvseg_hf` fails, and then loads the model with the code saved next to its weights.
"""
