"""The search: study files and the search space, samplers and pruners, the two engines that run
a study (Optuna, KerasTuner), and the workers that share one."""
