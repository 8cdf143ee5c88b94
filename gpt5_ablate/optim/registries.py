from gpt5_ablate.registry import Registry

OPTIMIZER: Registry = Registry("optimizer")
