"""Tuning records shipped with tvm-cruise (installed as the package ``tvm_cruise.tuning_logs``).

Every build applies the MetaSchedule JSON databases found here, in ``<target>/`` folders.
"""
