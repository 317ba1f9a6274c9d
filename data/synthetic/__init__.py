"""The synthetic MOVi-like demo data: scenes and rendering (scene.py), videos and shards (dataset.py).

    python -m data.synthetic --out_dir DIR
"""
