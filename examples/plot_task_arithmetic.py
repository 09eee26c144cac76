"""
Task arithmetic on a pretrained MNIST CNN: forget, add, merge
=============================================================

The experiment of Ilharco et al., "Editing Models with Task Arithmetic" (ICLR 2023), at the
size of a laptop: start from the pretrained MNIST CNN of :func:`weightspace.models.mnist_cnn`,
fine-tune copies of it on three digit tasks that it reads badly, take their task vectors
:math:`\\tau_t = \\theta_t - \\theta_0`, then

* **forget** one task by negation, :math:`\\theta_0 - \\lambda\\tau_t`, watching MNIST as a
  control task;
* **learn all three at once** by weight averaging, task arithmetic and TIES-merging.

This is a smaller copy of ``weightspace demo`` (four tasks, coefficients chosen on validation
images, a merged checkpoint written with provenance): run that for the full experiment.
Coefficients here are also chosen on validation images, never on the test images.
"""

import functools

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import weightspace as ws

base = ws.models.mnist_cnn()
prep = base.preprocess

# %%
# Three tasks, one label space
# ----------------------------
# All tasks are 10-way digit recognition, so the fine-tuned models share the 10-logit head
# and their task vectors live in one weight space. The inputs differ: digits at half size,
# digits at 30 % contrast, and scikit-learn's 8x8 digits upscaled to MNIST's 20x20 box.


def shrink(x):
    x = F.interpolate(x.float(), size=(14, 14), mode="bilinear", antialias=True)
    return F.pad(x, (7, 7, 7, 7)).round().clamp(0, 255).to(torch.uint8)


def fade(x):
    return (x.float() * 0.3 + 100).round().to(torch.uint8)


def upscale(x):
    x = F.interpolate(x.float(), size=(20, 20), mode="bilinear")
    return F.pad(x, (4, 4, 4, 4)).round().clamp(0, 255).to(torch.uint8)


g = torch.Generator().manual_seed(0)
mnist_train, mnist_val, mnist_test = (ws.data.mnist(s) for s in ("train50k", "val10k", "test"))
digits_train, digits_test = ws.data.digits("train"), ws.data.digits("test")


def take(ds, n, transform):
    index = torch.randperm(len(ds), generator=g)[:n]
    return transform(ds.images[index]), ds.targets[index]


sizes = ((mnist_train, 4000), (mnist_val, 300), (mnist_test, 1000))
tasks = {
    "shrunk": [take(d, n, shrink) for d, n in sizes],
    "faded": [take(d, n, fade) for d, n in sizes],
}
# The digits' training images are split in two: 1,100 to fine-tune on, 338 to validate on.
order = torch.randperm(len(digits_train), generator=g)
fit, val = (digits_train.subset(indices=order[:1100]), digits_train.subset(indices=order[1100:]))
tasks["digits"] = [
    take(fit, 1100, upscale),
    take(val, 338, upscale),
    take(digits_test, 359, upscale),
]
control_val = take(mnist_val, 300, lambda x: x)
control_test = take(mnist_test, 1000, lambda x: x)


def accuracy(model_or_state, data):
    net = model_or_state
    if not isinstance(net, torch.nn.Module):
        net = ws.models.MNISTNet()
        net.load_state_dict(model_or_state)
    x, y = data
    with torch.no_grad():
        return (net.eval()(prep(x)).argmax(1) == y).float().mean().item()


# %%
# Fine-tuning and task vectors
# ----------------------------
# 50 SGD steps per task on seeded batches; :meth:`weightspace.TaskVector.from_models` gives
# the task vector.


def fine_tune(x, y, steps=50, seed=0):
    model = ws.models.mnist_cnn().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(y), (32,), generator=gen)
        loss = F.cross_entropy(model(prep(x[i])), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


vectors, finetuned_acc = {}, {}
for k, (name, (train, _val, test)) in enumerate(tasks.items()):
    model = fine_tune(*train, seed=k)
    vectors[name] = ws.TaskVector.from_models(base=base, finetuned=model).materialize()
    finetuned_acc[name] = accuracy(model, test)
    print(
        f"{name:>7}: pretrained {accuracy(base, test):.1%} -> fine-tuned {finetuned_acc[name]:.1%}"
    )

# %%
# Forgetting by negation
# ----------------------
# Subtracting the ``digits`` vector lowers accuracy on the 8x8 digits. MNIST is a control:
# we keep the largest useful :math:`\lambda` whose control validation accuracy stays at 95 % of
# the pretrained model's.

lambdas = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5]
curve = []
for lam in lambdas:
    state = (-vectors["digits"]).apply_to(base.state_dict(), scale=lam)
    curve.append((accuracy(state, control_val), accuracy(state, tasks["digits"][1])))
floor = 0.95 * curve[0][0]
chosen = min(
    (c for c in zip(lambdas[1:], curve[1:], strict=True) if c[1][0] >= floor), key=lambda c: c[1][1]
)
forgotten = (-vectors["digits"]).apply_to(base.state_dict(), scale=chosen[0])
print(
    f"negation, lambda={chosen[0]}: digits {accuracy(base, tasks['digits'][2]):.1%} -> "
    f"{accuracy(forgotten, tasks['digits'][2]):.1%}, control MNIST "
    f"{accuracy(base, control_test):.1%} -> {accuracy(forgotten, control_test):.1%}"
)

# %%
# Learning all three at once
# --------------------------
# :func:`weightspace.merge.search_scales` picks the scale of task arithmetic and
# of TIES on validation images (mean normalised accuracy); averaging has none.

tv_list = list(vectors.values())
val_ft = {n: accuracy(vectors[n].apply_to(base.state_dict()), t[1]) for n, t in tasks.items()}


def val_score(state):
    return sum(accuracy(state, t[1]) / val_ft[n] for n, t in tasks.items()) / len(tasks)


ta = ws.merge.search_scales(tv_list, base, val_score, grid=[0.2, 0.3, 0.4, 0.6, 0.8])
ties = ws.merge.search_scales(
    tv_list,
    base,
    val_score,
    grid=[0.4, 0.6, 0.8, 1.0, 1.2],
    method=functools.partial(ws.merge.ties, density=0.2),
)
merged = {
    "averaging": ws.merge.mean(tv_list),
    f"task arithmetic ({ta.scale})": ws.merge.task_arithmetic(tv_list, scale=ta.scale),
    f"TIES ({ties.scale})": ws.merge.ties(tv_list, density=0.2, scale=ties.scale),
}
normalised = {}
for label, tv in merged.items():
    state = tv.apply_to(base.state_dict())
    normalised[label] = [accuracy(state, t[2]) / finetuned_acc[n] for n, t in tasks.items()]
    mean = sum(normalised[label]) / len(tasks)
    print(f"{label:>22}: mean normalised accuracy {mean:.1%}")

# %%
# The picture
# -----------
# Left: normalised test accuracy (merged / fine-tuned) per task. Right: the negation
# trade-off on validation images, one point per :math:`\lambda`.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=[1.5, 1])
width = 0.8 / len(normalised)
for i, (label, values) in enumerate(normalised.items()):
    xs = [j + (i - 1) * width for j in range(len(tasks))]
    ax1.bar(xs, [100 * v for v in values], width, label=label)
ax1.axhline(100, color="black", linestyle="--", linewidth=0.8)
ax1.set_xticks(range(len(tasks)), list(tasks))
ax1.set_ylabel("normalised test accuracy (%)")
ax1.legend(loc="lower right", fontsize=8)
ax2.plot([100 * c for c, _ in curve], [100 * t for _, t in curve], marker="o")
for lam, (c, t) in zip(lambdas, curve, strict=True):
    ax2.annotate(f"{lam:g}", (100 * c, 100 * t), xytext=(4, 4), textcoords="offset points")
ax2.axvline(100 * floor, color="grey", linestyle=":")
ax2.set_xlabel("control (MNIST) validation accuracy %")
ax2.set_ylabel("digits validation accuracy %")
ax2.set_title("forgetting by negation")
fig.tight_layout()
plt.show()
