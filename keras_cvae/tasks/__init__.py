"""The task registry: the only place that maps a task's name, or a model, to its task module.

Adding a task means writing one module that implements `tasks.base.Task` and adding one line to
TASKS below (and its name to `config.TASKS`, the `--task` choices).
"""

from __future__ import annotations

from keras_cvae.models.base import VariationalModel
from keras_cvae.tasks.base import EvaluationOptions, GenerateRequest, Task
from keras_cvae.tasks.classes import ClassesTask
from keras_cvae.tasks.completion import CompletionTask
from keras_cvae.tasks.semi_supervised import SemiSupervisedTask

TASKS: dict[str, Task] = {task.name: task for task in (ClassesTask(), CompletionTask(), SemiSupervisedTask())}

__all__ = ["TASKS", "EvaluationOptions", "GenerateRequest", "Task", "get_task", "task_of"]


def get_task(name: str) -> Task:
    """The task called `name`; a ValueError listing the valid names otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}") from None


def task_of(model: VariationalModel) -> Task:
    """The task whose model class is `model`'s class or its nearest base."""
    for model_class in type(model).__mro__:
        for task in TASKS.values():
            if task.model_class is model_class:
                return task
    raise ValueError(f"{type(model).__name__} belongs to no task; register one in keras_cvae.tasks")
