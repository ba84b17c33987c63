"""Adam with the update of each variable in one fused TensorFlow kernel.

Keras's Adam writes the update as about ten separate element-wise ops per variable; on a CPU
that costs more than the MLP's forward and backward passes together. `ResourceApplyAdam`
computes the same update (same formula, same slots) in one multithreaded kernel.

`normalize_gradients` divides each variable's gradient by its L2 norm (plus 1e-7) before the
update: the "AdamNormGrad" of the VampPrior and Exemplar VAE code, part of their protocol.
"""

from __future__ import annotations

import keras
import tensorflow as tf

GRADIENT_NORM_EPSILON = 1e-7  # AdamNormGrad's


@keras.saving.register_keras_serializable(package="keras_cvae")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam`, same arguments and maths, with a fused update on TensorFlow.

    Keras's update: m += (g − m)(1 − β₁); v += (g² − v)(1 − β₂);
    w −= lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (√v + ε) — exactly `ResourceApplyAdam`'s definition.
    AMSGrad falls back to Keras's own update.

    Args (beyond Adam's):
        normalize_gradients: bool. Divide each variable's gradient by its L2 norm (+ 1e-7)
            first, as the VampPrior code's AdamNormGrad. Defaults to False.

    Example:
        >>> model.compile(optimizer=FusedAdam(1e-3))
    """

    def __init__(self, *args, normalize_gradients: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.normalize_gradients = bool(normalize_gradients)

    def get_config(self) -> dict:
        return {**super().get_config(), "normalize_gradients": self.normalize_gradients}

    def update_step(self, gradient: tf.Tensor, variable: keras.Variable, learning_rate: tf.Tensor) -> None:
        if self.normalize_gradients:
            gradient = gradient / (tf.norm(tf.cast(gradient, tf.float32)) + GRADIENT_NORM_EPSILON)
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype),
            beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def _handle(variable) -> tf.Tensor:
    """The resource handle of a Keras variable (or of the tf.Variable it wraps)."""
    if isinstance(variable, tf.Variable):
        return variable.handle
    return variable.value.handle
