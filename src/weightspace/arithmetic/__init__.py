r"""The task-arithmetic experiments of Ilharco et al., with their baselines and selection rules.

"Editing Models with Task Arithmetic" (Ilharco et al., ICLR 2023, https://arxiv.org/abs/2212.04089)
shows three uses of a task vector :math:`\tau = \theta_{\mathrm{ft}} - \theta_0`:

* **forgetting by negation** (:func:`forget`): :math:`\theta_0 - \lambda\tau` lowers the
  target task's score while control tasks stay close to the pretrained model;
* **learning by addition** (:func:`add`): :math:`\theta_0 + \lambda\sum_t\tau_t` is one model
  for several tasks, compared with weight averaging, TIES, TALL masks and Consensus;
* **task analogies** (:func:`analogy`): :math:`\tau_C + (\tau_B - \tau_A)` approximates the
  vector of a fourth task that was never trained ("A is to B as C is to D").

Each function takes the pretrained state dict, the vectors and :class:`Task` objects (a
validation and a test score function; :meth:`Task.from_classifier` scores a classifier's
state dicts by :func:`weightspace.train.accuracy`), chooses the scale on validation data with
the paper's rule, and reports test scores. :func:`table` turns the results of several seeds
into a Markdown table of mean ± standard deviation.

Example:
    >>> import torch
    >>> from weightspace import TaskVector, arithmetic
    >>> base = {"w": torch.zeros(2)}
    >>> closeness = lambda goal: (lambda sd: 2 - float(((sd["w"] - goal) ** 2).sum()))
    >>> tasks = {name: arithmetic.Task(name, closeness(goal), closeness(goal))
    ...          for name, goal in (("a", torch.tensor([1.0, 0.0])),
    ...                             ("b", torch.tensor([0.0, 1.0])))}
    >>> vectors = {"a": TaskVector({"w": torch.tensor([1.0, 0.0])}),
    ...            "b": TaskVector({"w": torch.tensor([0.0, 1.0])})}
    >>> result = arithmetic.add(base, vectors, tasks)
    >>> result.rows["task_arithmetic"].scale, result.rows["average"].scale
    (0.5, 1.0)
"""

from __future__ import annotations

from weightspace.arithmetic._analogy import AnalogyResult as AnalogyResult
from weightspace.arithmetic._analogy import analogy as analogy
from weightspace.arithmetic._experiments import DEFAULT_GRID as DEFAULT_GRID
from weightspace.arithmetic._experiments import AdditionResult as AdditionResult
from weightspace.arithmetic._experiments import ForgetResult as ForgetResult
from weightspace.arithmetic._experiments import Method as Method
from weightspace.arithmetic._experiments import MethodRow as MethodRow
from weightspace.arithmetic._experiments import Scores as Scores
from weightspace.arithmetic._experiments import Task as Task
from weightspace.arithmetic._experiments import add as add
from weightspace.arithmetic._experiments import default_methods as default_methods
from weightspace.arithmetic._experiments import forget as forget
from weightspace.arithmetic._summary import Summary as Summary
from weightspace.arithmetic._summary import summarize as summarize
from weightspace.arithmetic._summary import table as table

__all__ = [
    "DEFAULT_GRID",
    "AdditionResult",
    "AnalogyResult",
    "ForgetResult",
    "Method",
    "MethodRow",
    "Scores",
    "Task",
    "add",
    "analogy",
    "default_methods",
    "forget",
    "summarize",
    "table",
]
