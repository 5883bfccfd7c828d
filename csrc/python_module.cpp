// An empty Python module `hatch_ext._C`: importing it loads this shared library, whose static
// initialisers register the ops. Only the setuptools build compiles this file (the CMake build is a
// plain libtorch library for C++ users and needs no Python).
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
