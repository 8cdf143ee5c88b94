from gpt5_ablate.cli import run

run()
