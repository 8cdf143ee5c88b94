"""The ``optimizer`` registry and its contract.

An optimizer option is

- a config class subclassing ``gpt5_ablate.registry.ComponentConfig`` whose
  ``validate(ctx=None)`` raises ``ConfigError`` naming the bad value and the valid range (it needs
  nothing but its own keys, so ``ctx`` is unused);
- a builder registered with ``@OPTIMIZER.register(name, ConfigClass)`` and called as
  ``OPTIMIZER.get(name)(cfg, model)``: the model is this group's context. It returns a list of
  ``torch.optim.Optimizer`` objects over disjoint parameter sets covering every trainable parameter
  of ``model``; the trainer steps, zeroes, schedules (each param group's ``lr`` x the shared LR
  multiplier) and checkpoints each of them alike. Keys that scale every learning rate of the
  option (``lr_scale``) must be applied by the builder.

Protocol-like signature of a builder::

    def build(cfg: ConfigClass, model: torch.nn.Module) -> list[torch.optim.Optimizer]: ...
"""

from gpt5_ablate.registry import Registry

OPTIMIZER: Registry = Registry("optimizer")
