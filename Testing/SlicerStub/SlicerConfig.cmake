#-----------------------------------------------------------------------------
# A stand-in for Slicer's SlicerConfig.cmake, to configure and install the SpineDART extension
# WITHOUT a Slicer build (lint only: nothing is compiled, nothing runs in Slicer):
#
#   cmake -S . -B /tmp/sd-build -DSlicer_DIR=$PWD/Testing/SlicerStub
#   cmake --install /tmp/sd-build --prefix /tmp/sd-install
#
# Configuring fails, naming the file, when a CMakeLists.txt lists a file that does not exist; the
# install step lays the files out as a Slicer extension package does
# (lib/Slicer-X.Y/qt-scripted-modules/...). Used by Testing/python/test_cmake_lint.py.
#-----------------------------------------------------------------------------

set(Slicer_FOUND TRUE)
set(Slicer_STUB TRUE)
set(Slicer_CONFIG_DIR "${CMAKE_CURRENT_LIST_DIR}")

# The Slicer release the stub pretends to be (Slicer 5.10 ships Python 3.12, like 5.12).
set(Slicer_VERSION_MAJOR 5)
set(Slicer_VERSION_MINOR 10)
set(Slicer_VERSION_PATCH 0)
set(Slicer_VERSION "${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}.${Slicer_VERSION_PATCH}")
set(Slicer_MAIN_PROJECT_APPLICATION_NAME Slicer)
set(Slicer_WC_REVISION "0")
set(Slicer_OS "linux")
set(Slicer_ARCHITECTURE "amd64")

set(Slicer_USE_PYTHONQT ON)
set(Slicer_USE_QtTesting OFF)
set(Slicer_BUILD_EXTENSIONMANAGER_SUPPORT ON)

# Same layout as Slicer: build-tree and install-tree folders of scripted modules.
set(Slicer_LIB_DIR "lib/Slicer-${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}")
set(Slicer_QTSCRIPTEDMODULES_SUBDIR "qt-scripted-modules")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_LIB_DIR}/${Slicer_QTSCRIPTEDMODULES_SUBDIR}")
set(Slicer_INSTALL_ROOT "./")
set(Slicer_INSTALL_LIB_DIR "${Slicer_INSTALL_ROOT}${Slicer_LIB_DIR}")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_INSTALL_ROOT}${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")

set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionCPack.cmake")

message(STATUS "Using the Slicer CMake stub (lint only) in ${CMAKE_CURRENT_LIST_DIR}")
