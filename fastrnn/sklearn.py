"""scikit-learn estimators: ``RNNRegressor`` and ``RNNClassifier``.

    from fastrnn.sklearn import RNNRegressor, RNNClassifier

Each estimator trains a many-to-one model -- a recurrent layer (LSTM, GRU or RNN) whose final
state feeds a ``Dense`` output layer -- with ``fastrnn.train``, and follows the scikit-learn
conventions: the constructor only stores its arguments (they are checked in ``fit``),
``get_params``/``set_params``/``clone`` work, fitted attributes end with an underscore, and the
estimators go into ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``.

X is ``(n_samples, n_timesteps, n_features)``, or 2-D ``(n_samples, n_timesteps)``: one feature
per step (so a 2-D X can pass through scikit-learn transformers such as ``StandardScaler``
first). The estimators do not scale X; the regressor standardises y internally (and undoes it
in ``predict``), so the defaults train on targets of any scale.

scikit-learn is an optional dependency: this module imports it, ``import fastrnn`` does not.
"""
import contextlib

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted

from . import _checks
from .layers import GRU, LSTM, RNN, get_num_threads, set_num_threads
from .train import SGD, Adam, AdamW, Dense, Dropout, EarlyStopping, Recurrent, RMSprop, Sequential
from .train import softmax

try:                                    # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:                     # older scikit-learn: the estimator method
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

__all__ = ["RNNRegressor", "RNNClassifier"]

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
_OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "sgd": SGD}
_FLOATS = (np.float64, np.float32)


@contextlib.contextmanager
def _threads(n):
    """fastrnn's thread count set to ``n`` inside the block (unchanged for None)."""
    if n is None:
        yield
        return
    old = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(old)


def _ndim(X):
    nd = getattr(X, "ndim", None)
    return np.asarray(X).ndim if nd is None else nd


class _RNNEstimator(BaseEstimator):
    """Parameters and machinery shared by RNNRegressor and RNNClassifier.

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn"}, default="lstm"
        The recurrent layer (``"rnn"`` is the Elman RNN with tanh).
    hidden_size : int, default=32
        Units per recurrent layer (and per direction).
    num_layers : int, default=1
        Stacked recurrent layers.
    bidirectional : bool, default=False
        Read the sequence both ways; the final states of the two directions are concatenated.
    dropout : float, default=0.0
        Dropout rate between stacked recurrent layers and on the final state before the output
        layer (training only).
    epochs : int, default=30
        Passes over the training data (fewer with ``early_stopping``).
    batch_size : int, default=32
        Samples per update.
    learning_rate : float, default=0.01
        The optimizer's learning rate.
    optimizer : {"adam", "adamw", "rmsprop", "sgd"}, default="adam"
    clipnorm : float or None, default=1.0
        Clip the global gradient norm to this value (None: no clipping).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (a random part) and stop when its
        loss has not improved for ``patience`` epochs; the best epoch's weights are kept.
    validation_fraction : float, default=0.1
        Share of the samples held out when ``early_stopping`` is on.
    patience : int, default=5
        Epochs without improvement of the validation loss before stopping.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the weights and the computation.
    n_threads : int or None, default=None
        fastrnn threads during ``fit`` and ``predict`` (None: the current setting,
        ``fastrnn.get_num_threads()``); the previous setting is restored afterwards.
    verbose : {0, 1, 2}, default=0
        0 silent, 1 a progress bar per epoch, 2 one line per epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, shuffling, dropout and the validation split: an int gives the same
        model on every fit (at the same thread count: sums split over other threads round
        differently); None a different one (the seed is drawn from NumPy's global generator).
    """

    _loss = None

    def __init__(self, cell="lstm", hidden_size=32, num_layers=1, bidirectional=False, dropout=0.0,
                 epochs=30, batch_size=32, learning_rate=0.01, optimizer="adam", clipnorm=1.0,
                 early_stopping=False, validation_fraction=0.1, patience=5, dtype="float32",
                 n_threads=None, verbose=0, random_state=None):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.clipnorm = clipnorm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.dtype = dtype
        self.n_threads = n_threads
        self.verbose = verbose
        self.random_state = random_state

    # ---- tags ------------------------------------------------------------------------------
    def __sklearn_tags__(self):                 # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def _more_tags(self):                       # scikit-learn < 1.6
        return {"X_types": ["2darray", "3darray"]}

    # ---- checks ----------------------------------------------------------------------------
    def _check_params(self):
        """The constructor arguments checked, as the values fit uses (a ValueError or TypeError
        naming the parameter otherwise)."""
        cell = self.cell.lower() if isinstance(self.cell, str) else self.cell
        _checks.one_of(cell, "cell", tuple(_CELLS))
        opt = self.optimizer.lower() if isinstance(self.optimizer, str) else self.optimizer
        _checks.one_of(opt, "optimizer", tuple(_OPTIMIZERS))
        _checks.count(self.hidden_size, "hidden_size")
        _checks.count(self.num_layers, "num_layers")
        _checks.in_range(self.dropout, "dropout", 0, 1)
        _checks.count(self.epochs, "epochs")
        _checks.count(self.batch_size, "batch_size")
        _checks.positive(self.learning_rate, "learning_rate")
        if self.clipnorm is not None:
            _checks.positive(self.clipnorm, "clipnorm")
        for name in ("bidirectional", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.early_stopping:
            _checks.in_range(self.validation_fraction, "validation_fraction", 0, 1, "()")
            _checks.positive_int(self.patience, "patience", 0)
        try:
            dtype = _checks.check_dtype(self.dtype)
        except TypeError:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}") from None
        if self.n_threads is not None:
            _checks.count(self.n_threads, "n_threads")
        if self.verbose not in (0, 1, 2) or isinstance(self.verbose, bool):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        rs = self.random_state
        if _checks.int_like(rs) and rs >= 0:
            seed = int(rs)
        else:   # None (NumPy's global generator) or a RandomState: draw the seed from it
            try:
                seed = int(check_random_state(rs).randint(0, 2**31 - 1))
            except ValueError:
                raise ValueError("random_state must be None, an integer >= 0 or a "
                                 f"numpy.random.RandomState, got {rs!r}") from None
        return cell, opt, dtype, seed

    def _fit_X_y(self, X, y, y_numeric, multi_output):
        """Checked (X as (n, T, F), y); sets n_features_in_ (and feature_names_in_)."""
        X, y = _validate_data(self, X, y, reset=True, allow_nd=True, dtype=_FLOATS,
                              y_numeric=y_numeric, multi_output=multi_output)
        if X.ndim not in (2, 3):
            raise ValueError(f"X must be 2-D (n_samples, n_timesteps) or 3-D (n_samples, "
                             f"n_timesteps, n_features), got shape {X.shape}")
        self._x_ndim = X.ndim
        if X.ndim == 3:
            # scikit-learn's n_features_in_ counts columns; a 3-D X has n_features per step
            self.n_features_in_ = X.shape[2]
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        return (X if X.ndim == 3 else X[:, :, None]), y

    def _predict_X(self, X):
        """X checked against what fit saw, as (n, T, F)."""
        check_is_fitted(self)
        name = type(self).__name__
        if _ndim(X) == 3:
            X = check_array(X, allow_nd=True, dtype=_FLOATS, input_name="X")
            if self._x_ndim != 3:
                raise ValueError(f"{name} was fitted on 2-D X (n_samples, n_timesteps); got a 3-D X "
                                 f"of shape {X.shape}")
            if X.shape[2] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[2]} features per step, but {name} is expecting "
                                 f"{self.n_features_in_} features as input")
            return X
        if self._x_ndim == 3 and _ndim(X) == 2:
            raise ValueError(f"{name} was fitted on 3-D X (n_samples, n_timesteps, n_features); got "
                             f"a 2-D X of shape {np.shape(X)}: add the feature axis")
        X = _validate_data(self, X, reset=False, dtype=_FLOATS)
        return X[:, :, None]

    # ---- fit / predict ---------------------------------------------------------------------
    def _fit(self, params, X, y, n_out, sample_weight, lengths):
        """Build and train the model on checked X (n, T, F) and model targets y."""
        cell, opt, dtype, seed = params
        F = X.shape[2]
        L = self.num_layers
        engine = _CELLS[cell](F, self.hidden_size, num_layers=L, dropout=self.dropout if L > 1 else 0.0,
                              bidirectional=bool(self.bidirectional), dtype=dtype, seed=seed)
        layers = [Recurrent(engine, return_sequences=False)]
        if self.dropout:
            layers.append(Dropout(self.dropout))
        layers.append(Dense(n_out))
        model = Sequential(layers, seed=seed, dtype=dtype)
        model.compile(loss=self._loss,
                      optimizer=_OPTIMIZERS[opt](learning_rate=self.learning_rate, clipnorm=self.clipnorm))
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.shape != (len(X),):
                raise ValueError(f"lengths must have shape ({len(X)},) (one per sample), got {lengths.shape}")
        val, callbacks = None, []
        if self.early_stopping:
            N = len(X)
            nv = int(round(N * self.validation_fraction))
            if nv < 1 or nv >= N:
                raise ValueError(f"validation_fraction={self.validation_fraction} of {N} samples "
                                 f"leaves {nv} for validation and {N - nv} for training")
            order = np.random.default_rng([seed, 3]).permutation(N)
            vi, ti = order[:nv], order[nv:]
            part = lambda a, i: None if a is None else a[i]
            val = (X[vi], y[vi]) if lengths is None else (X[vi], y[vi], lengths[vi])
            X, y = X[ti], y[ti]
            sample_weight, lengths = part(sample_weight, ti), part(lengths, ti)
            callbacks.append(EarlyStopping(patience=self.patience, restore_best_weights=True))
        with _threads(self.n_threads):
            history = model.fit(X, y, epochs=self.epochs, batch_size=self.batch_size,
                                validation_data=val, callbacks=callbacks, verbose=self.verbose,
                                lengths=lengths, sample_weight=sample_weight)
        self.model_ = model
        self.history_ = {k: list(v) for k, v in history.history.items()}
        self.n_iter_ = len(history.epoch)
        return self

    def _outputs(self, X, lengths):
        X = self._predict_X(X)
        with _threads(self.n_threads):
            return self.model_.predict(X, lengths=None if lengths is None else np.asarray(lengths))


# the shared "Parameters" section (None under python -OO, which drops docstrings)
_PARAMS_DOC = (_RNNEstimator.__doc__ or "\n").split("\n", 1)[1]


class RNNRegressor(RegressorMixin, _RNNEstimator):
    __doc__ = ("Recurrent-network regressor: a many-to-one LSTM/GRU/RNN whose final state feeds a "
               "linear output layer.\n\n    y is 1-D (n_samples,) or 2-D (n_samples, n_outputs); "
               "it is standardised per output for training and predictions are on its scale.\n"
               + _PARAMS_DOC + """
    Attributes
    ----------
    model_ : fastrnn.Sequential
        The trained model (it predicts standardised targets).
    history_ : dict
        Loss per epoch ("loss", and "val_loss" with early stopping), on standardised targets.
    n_iter_ : int
        Epochs run.
    n_outputs_ : int
        Number of targets.
    n_features_in_ : int
        Features per step of a 3-D X; columns (steps) of a 2-D X, as scikit-learn counts them.
    feature_names_in_ : ndarray of str
        Column names of a 2-D X given as a DataFrame with string column names.
    """)

    _loss = "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):
        return {"X_types": ["2darray", "3darray"], "multioutput": True}

    def fit(self, X, y, sample_weight=None, lengths=None):
        """Train on X (n, T, F) or (n, T) and y (n,) or (n, n_outputs).

        sample_weight: (n,) weights of the samples in the loss.
        lengths: (n,) valid steps of each sequence, for ragged sequences padded at the end
            (the prediction is read at each sequence's last valid step)."""
        params = self._check_params()
        X, y = self._fit_X_y(X, y, y_numeric=True, multi_output=True)
        y = np.asarray(y, np.float64)
        self._y_1d = y.ndim == 1
        y2 = y.reshape(len(y), -1)
        self.n_outputs_ = y2.shape[1]
        if self.n_outputs_ == 0:
            raise ValueError(f"y has shape {y.shape}: no targets")
        # standardised with the sample weights, so that weight k is k copies of a sample
        w = None
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
            w = sample_weight if sample_weight.sum() > 0 else None
        mean = np.average(y2, axis=0, weights=w)
        scale = np.sqrt(np.average((y2 - mean) ** 2, axis=0, weights=w))
        scale[~(scale > 1e-12 * np.maximum(1.0, np.abs(mean)))] = 1.0
        self._y_mean, self._y_scale = mean, scale
        return self._fit(params, X, (y2 - mean) / scale, self.n_outputs_, sample_weight, lengths)

    def predict(self, X, lengths=None):
        """Predictions (n,) for a 1-D y in fit, else (n, n_outputs)."""
        out = self._outputs(X, lengths).astype(np.float64) * self._y_scale + self._y_mean
        return out[:, 0] if self._y_1d else out


class RNNClassifier(ClassifierMixin, _RNNEstimator):
    __doc__ = ("Recurrent-network classifier: a many-to-one LSTM/GRU/RNN whose final state feeds a "
               "linear layer of one logit per class, trained with softmax cross-entropy.\n\n"
               "    y holds labels of any kind (ints, strings, ...), binary or multiclass.\n"
               + _PARAMS_DOC + """
    Attributes
    ----------
    classes_ : ndarray
        The class labels (sorted); column k of ``predict_proba`` is ``classes_[k]``.
    model_ : fastrnn.Sequential
        The trained model (it outputs logits; ``predict_proba`` is their softmax).
    history_ : dict
        Loss per epoch ("loss", and "val_loss" with early stopping).
    n_iter_ : int
        Epochs run.
    n_outputs_ : int
        Number of classes (outputs of the model).
    n_features_in_ : int
        Features per step of a 3-D X; columns (steps) of a 2-D X, as scikit-learn counts them.
    feature_names_in_ : ndarray of str
        Column names of a 2-D X given as a DataFrame with string column names.
    """)

    _loss = "cross_entropy"

    def fit(self, X, y, sample_weight=None, lengths=None):
        """Train on X (n, T, F) or (n, T) and labels y (n,).

        sample_weight: (n,) weights of the samples in the loss.
        lengths: (n,) valid steps of each sequence, for ragged sequences padded at the end."""
        params = self._check_params()
        X, y = self._fit_X_y(X, y, y_numeric=False, multi_output=False)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        self.n_outputs_ = len(self.classes_)
        return self._fit(params, X, codes.astype(np.int64), self.n_outputs_, sample_weight, lengths)

    def predict_proba(self, X, lengths=None):
        """Class probabilities (n, n_classes), columns in the order of ``classes_``."""
        return softmax(self._outputs(X, lengths).astype(np.float64))

    def predict(self, X, lengths=None):
        """The most probable class of each sample."""
        out = self._outputs(X, lengths)
        return self.classes_[np.argmax(out, axis=1)]
