"""Running an experiment: the command line (cli.py), the training loop (trainer.py), the run
dir and its lock (rundir.py), checkpoints, metrics and image writers, the console, devices."""
