"""RNN lore from the lecture material, as library features.

- Initialisers (:func:`init_`, :func:`irnn`): identity-initialised ReLU RNN (IRNN, Le et al.
  2015), orthogonal recurrent weights, forget-gate bias 1, Glorot and PyTorch-uniform, per layer.
- Echo state networks (:class:`ESN`): a fixed random reservoir run by the C engine, washout,
  ridge-regression readout in closed form, teacher-forced prediction and closed-loop generation.
- Skip connections through time (:class:`SkipRecurrent`): h_t also fed from h_{t-k}, exact BPTT.
- Output-to-hidden recurrence (:class:`JordanRNN`): the previous output feeds the next step;
  trained with teacher forcing (all steps in parallel), run free at prediction time.
- Gradient-flow diagnostics (:func:`state_gradients`, :func:`gradient_flow`,
  :func:`recurrent_eigenvalues`, :func:`spectral_radius`, :func:`plot_gradient_flow`).
- The classical baseline (:class:`AR`): an AR(p) model fitted by Yule-Walker.

Leaky-integrator units are an engine option: ``fr.RNN(..., leak=alpha)``.
SkipRecurrent and JordanRNN register their names for ``fr.load`` (train/registry.py).
"""
from .ar import AR
from .diagnostics import (engine_has_leak, engine_has_state_grads, gradient_flow, plot_gradient_flow,
                          recurrent_eigenvalues, spectral_radius, state_gradients)
from .esn import ESN, nrmse
from .init import init_, irnn, orthogonal
from .jordan import JordanRNN
from .skip import SkipRecurrent

__all__ = ["init_", "irnn", "orthogonal", "ESN", "AR", "SkipRecurrent", "JordanRNN",
           "spectral_radius", "recurrent_eigenvalues", "state_gradients", "gradient_flow",
           "plot_gradient_flow", "engine_has_leak", "engine_has_state_grads", "nrmse"]
