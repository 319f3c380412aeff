"""Tests run every kernel in Triton's interpreter: TRITON_INTERPRET must be set before triton is imported."""
import os

os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("default", deadline=None, max_examples=25, derandomize=True,
                                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.register_profile("thorough", deadline=None, max_examples=300)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
