{
  "targets": [
    {
      "target_name": "pgbroker",
      "sources": ["src/addon.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node scripts/find-lib.js --cflags)"
      ],
      "ldflags": ["-Wl,--exclude-libs,ALL"],
      "libraries": ["<!@(node scripts/find-lib.js --libs)"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-fexceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "defines!": ["NAPI_DISABLE_CPP_EXCEPTIONS"]
    }
  ]
}
