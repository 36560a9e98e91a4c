"""Training the predictor: losses, optimisers (Ranger, Adam, and `phase_switch`, the
optax transformation holding one optimizer per phase), the pure reconstruction and
distillation steps, the schedule and its settings, the phases and their resumable loop,
BatchNorm re-estimation, orbax run checkpoints, the device mesh and shardings, top-1
evaluation, and classifier training for teachers.
"""
