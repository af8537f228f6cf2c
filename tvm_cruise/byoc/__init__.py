"""BYOC: splitting a Relax graph between an accelerator and the host.

Will hold the spec-driven pattern tables, the checks that return reasons, the partition
pass, the placement report, and the NPU program compiler and simulator. Not implemented
yet: today every operator of a cruise target runs on the host and the artifact says so
(``metadata["accelerator"]["note"]``).
"""
