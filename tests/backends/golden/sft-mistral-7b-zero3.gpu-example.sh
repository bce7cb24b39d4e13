#!/bin/bash

# Parameters
#SBATCH --account=my-project
#SBATCH --constraint='a100|h100'
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --gpus-per-node=8
#SBATCH --job-name=sft-mistral-7b-zero3
#SBATCH --mem=480GB
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output='/scratch/runs/mistral 7b/slurm/%j_0_log.out'
#SBATCH --partition=gpu
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --time=240

# setup
export NCCL_DEBUG=WARN
export PYTHONUNBUFFERED=1
module load cuda/12.4
source /path/to/venv/bin/activate

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output '/scratch/runs/mistral 7b/slurm/%j_%t_log.out' /opt/venv/bin/python -u -m submitit.core._submit '/scratch/runs/mistral 7b/slurm'

