from scripts.gpu_check.check import run

run()
