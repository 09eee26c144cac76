"""
Permutation alignment: two MNIST networks, one basin
====================================================

Two networks trained from different random seeds reach similar accuracy, but the straight line
between their weights crosses a ridge of high loss: the *loss barrier* (Entezari et al., ICLR
2022). Part of the reason is that their hidden units come in different orders. Git Re-Basin
(Ainsworth, Hayase & Srinivasa, ICLR 2023, arXiv:2209.04836) permutes the units of one network,
which leaves its function exactly unchanged, to line them up with the other's; after that, the
straight line between them stays low.

Here: two MLPs (784-512-512-10) trained for one epoch on MNIST from different seeds, the loss
and accuracy along the straight line between them before alignment, after weight matching and
after activation matching, and the barriers.
"""

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import weightspace as ws
from weightspace import align, train

# %%
# Data and two networks
# ---------------------
# The 50,000 training digits of the classic split, and the 10,000 test digits for the curves.

train_set, test_set = ws.data.mnist("train50k"), ws.data.mnist("test")
stats = train_set.mean_std()
x_train, y_train = train_set.tensors(normalize=stats, flatten=True)
x_test, y_test = test_set.tensors(normalize=stats, flatten=True)


def mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


models = []
for seed in (0, 1):
    model = mlp(seed)
    train.fit_(model, (x_train, y_train), epochs=1, batch_size=128, lr=1e-3, seed=seed)
    models.append(model.eval())
    print(f"seed {seed}: test accuracy {train.accuracy(model, (x_test, y_test)):.2%}")
model_a, model_b = models

# %%
# The permutation structure
# -------------------------
# :func:`weightspace.align.permutation_spec` follows one forward pass and finds the two hidden
# layers: each one permutes the rows of its linear layer (and bias) and the columns of the next.

spec = align.permutation_spec(model_a, x_test[:2])
print(spec.describe())

# %%
# Aligning model B to model A
# ---------------------------
# Weight matching looks only at the weights; activation matching at the correlation of hidden
# units on 5,000 training images. The permuted copies compute exactly what model B computes.

perm_wm = align.weight_matching(spec, model_a, model_b, seed=0)
perm_am = align.activation_matching(model_a, model_b, x_train[:5000], spec)
b_wm = align.permute(model_b, spec, perm_wm)
b_am = align.permute(model_b, spec, perm_am)
with torch.no_grad():
    assert torch.allclose(b_wm(x_test[:256]), model_b(x_test[:256]), atol=1e-5)
agree = {g: (perm_wm[g] == perm_am[g]).float().mean().item() for g in spec.groups}
print("units on which both matchings agree:", {g: f"{v:.0%}" for g, v in agree.items()})

# %%
# Along the straight line
# -----------------------
# :func:`weightspace.align.loss_barrier` evaluates 11 evenly spaced points between the two
# networks. The barrier is the largest excess of the test loss over the straight line between
# its end values (for accuracy: the largest shortfall).

probe = mlp(0).eval()


def test_metrics(state):
    probe.load_state_dict(state)
    with torch.no_grad():
        logits = probe(x_test)
    accuracy = (logits.argmax(1) == y_test).float().mean().item()
    return F.cross_entropy(logits, y_test).item(), accuracy


def path(other):
    accuracies = []

    def test_loss(state):
        loss, accuracy = test_metrics(state)
        accuracies.append(accuracy)
        return loss

    loss = align.loss_barrier(test_loss, model_a, other, steps=11)
    return loss, align.BarrierResult.from_values(loss.t, accuracies, maximize=True)


paths = {"naive": model_b, "weight matching": b_wm, "activation matching": b_am}
curves = {}
for label, other in paths.items():
    loss, acc = curves[label] = path(other)
    print(
        f"{label:>20}: loss barrier {loss.barrier:.3f} (at t={loss.t_max:.1f}), "
        f"accuracy barrier {100 * acc.barrier:.1f} points, midpoint accuracy {acc.values[5]:.2%}"
    )

# %%
# The picture
# -----------
# Test loss (left) and accuracy (right) along the path from model A (t = 0) to model B or its
# aligned copy (t = 1). The ends are the same networks in all three curves: only the order of
# B's hidden units differs.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
for label, (loss, acc) in curves.items():
    ax1.plot(loss.t, loss.values, marker="o", label=f"{label} (barrier {loss.barrier:.2f})")
    ax2.plot(acc.t, [100 * v for v in acc.values], marker="o", label=label)
ax1.set_xlabel("t")
ax1.set_ylabel("test loss")
ax1.legend(fontsize=8)
ax2.set_xlabel("t")
ax2.set_ylabel("test accuracy (%)")
ax2.legend(fontsize=8)
fig.suptitle("Interpolating two MNIST MLPs trained from different seeds")
fig.tight_layout()
plt.show()
