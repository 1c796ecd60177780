{
  "targets": [
    {
      "target_name": "imgclass_onednn",
      "sources": ["onednn.cc", "train-network.cc"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fopenmp", "-ffp-contract=off"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-ldnnl"]
    }
  ]
}
