"""FreeTickets on ImageNet: EDST ResNet-50, 4 tickets at 80% sparsity (see tf_freetickets/experiments/paper_configs.py).

python -m tf_freetickets.train --config=configs/imagenet_resnet50_edst.py --workdir=out/imagenet_edst --strategy=mirrored
Sparsity 0.9: --config.sparse.sparsity=0.9. Needs imagenet2012 prepared for tfds in $TFDS_DATA_DIR
(or --config.data_dir): put ILSVRC2012_img_{train,val}.tar in <data_dir>/downloads/manual and run
`tfds build imagenet2012 --data_dir=<data_dir>`. 310 epochs: a multi-accelerator job.
"""

from tf_freetickets.experiments.paper_configs import freetickets_imagenet


def get_config():
    return freetickets_imagenet(sparsity=0.8, num_members=4)
